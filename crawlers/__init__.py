"""pointcount's crawl stage: a Scrapy project driven by platform definitions.

Public API: :func:`crawlers.run.crawl_platform` (runs one platform's crawl in a child process and returns a
:class:`pointcount.results.CrawlResult`). See ``docs/crawling.md``.
"""
