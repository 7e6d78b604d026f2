"""The HTTP download handler: Scrapy's, without Twisted's silent resend.

Twisted's ``HTTPConnectionPool`` sends an idempotent request again, at once, when a reused keep-alive connection
closes before any answer (``retryAutomatically``). That resend happens below every downloader middleware: the
budget does not count it and it reaches the server inside the delay (measured on the sandbox with a server that
drops connections: the same page again 8 ms later, with a 20 ms delay). Off here, such a failure goes to Scrapy's
RetryMiddleware like any other: after the delay, counted, and counted as a failure by
:class:`crawlers.middlewares.PolitenessMiddleware`.

Settings: ``DOWNLOAD_HANDLERS`` in :mod:`crawlers.settings` puts it on ``http`` and ``https``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


class PoliteHTTP11DownloadHandler(HTTP11DownloadHandler):
    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        self._pool.retryAutomatically = False  # one request out per request counted, and only after the delay
