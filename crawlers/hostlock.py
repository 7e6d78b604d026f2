"""One politeness queue per host across platform crawls: crawls of platforms that share a host take turns.

Two platform definitions may name the same host (two sections of one site, or one host on several ports), and
every platform crawls in its own process with its own download slot. So that together they are never faster
than one, the crawl child holds an exclusive lock per host (``fcntl.flock`` on ``<state_dir>/hosts/<host>.lock``)
for its whole crawl: crawls sharing a host run one after the other, whatever the flow's parallelism, and crawls on
other hosts are not held up. On release the file records when the last response was in and the delay that
crawl kept; the next holder waits until that moment plus the larger of the two delays before its first request
(robots.txt included), so the gap across the hand-over is no shorter than inside one crawl. A crashed or killed
holder releases the lock with its process. The files hold two numbers, never a URL or page content.
"""

from __future__ import annotations

import fcntl
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

_UNSAFE = re.compile(r"[^a-z0-9._-]")


def lock_path(lock_dir: Path, host: str) -> Path:
    """The lock file of a host (lower-cased; characters outside ``a-z0-9._-``, e.g. IPv6 colons, as ``_``)."""
    return lock_dir / f"{_UNSAFE.sub('_', host.lower().rstrip('.'))}.lock"


def _last_turn(f: IO[str]) -> tuple[float, float]:
    """(time the previous holder's last response was in, the delay it kept); (0, 0) for a fresh file."""
    f.seek(0)
    try:
        ended, delay = (float(x) for x in f.read().split())
    except ValueError:
        return 0.0, 0.0
    return ended, delay


@contextmanager
def host_turn(
    lock_dir: Path, hosts: Iterable[str], delay_s: float, kept_delay: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[float]:
    """Hold every one of ``hosts`` (sorted, so two crawls never deadlock) for the body; yields the seconds waited
    after getting the locks for the previous holder's delay. ``kept_delay`` (called on release) is the delay this
    crawl ended up keeping (a robots.txt Crawl-delay may have raised ``delay_s``)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        files = []
        for host in sorted({h.lower().rstrip(".") for h in hosts}):
            f = stack.enter_context(lock_path(lock_dir, host).open("a+", encoding="ascii"))
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            files.append(f)
        not_before = max((ended + max(delay, delay_s) for ended, delay in map(_last_turn, files)), default=0.0)
        waited = max(0.0, not_before - time.time())
        if waited:
            sleep(waited)
        try:
            yield waited
        finally:
            ended, kept = time.time(), kept_delay() if kept_delay is not None else delay_s
            for f in files:
                f.seek(0)
                f.truncate()
                f.write(f"{ended:.6f} {kept:.6f}\n")
                f.flush()
