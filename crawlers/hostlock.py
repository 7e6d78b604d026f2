"""One politeness queue per host across platform crawls: crawls of platforms that share a host take turns.

Two platform definitions may name the same host (two sections of one site, or one host on several ports), and
every platform crawls in its own process with its own download slot. So that together they are never faster
than one, the crawl child holds an exclusive lock per host (``fcntl.flock`` on ``<state_dir>/hosts/<host>.lock``)
for its whole crawl: crawls sharing a host run one after the other, whatever the flow's parallelism, and crawls on
other hosts are not held up. Host spellings of one site share a lock: ``www.`` is stripped and ``localhost`` /
``::1`` are ``127.0.0.1``.

The lock file is one JSON line of numbers and a run id (never a URL or page content):

- on getting the lock the holder writes ``running`` (with its pid). A holder killed mid-crawl (SIGKILL, OOM, the
  watchdog) never writes its end, but the lock is released with its process, so the next holder that finds a
  ``running`` record counts the delay from the moment it got the lock: the dead crawl's last request was earlier;
- on release it writes when its last response was in, the delay it kept (robots.txt Crawl-delay included), the
  wall-clock time until which the host asked for a pause (the latest Retry-After), and the run id if it ended
  ``blocked``. The pause and the run id are carried over by every later holder until they no longer apply.

The next holder waits until the previous end plus the larger of the two delays, and until the host's pause is
over, before its first request (robots.txt included), so the gap across the hand-over is no shorter than inside
one crawl. A crawl of the same run that finds its host refused a sibling platform sends nothing (``refused``);
so does one whose wait would run past ``latest`` (the end of the crawl window).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pointcount.config import bare_host

_UNSAFE = re.compile(r"[^a-z0-9._-]")
_LOOPBACK_NAMES = frozenset({"localhost", "::1", "[::1]", "0:0:0:0:0:0:0:1"})


def host_key(host: str) -> str:
    """The spelling of a host its lock is keyed on: lower-case, no trailing dot, no ``www.``, loopback names as
    ``127.0.0.1`` (``example.org`` and ``www.example.org``, ``localhost`` and ``127.0.0.1`` are one queue)."""
    host = bare_host(host)
    return "127.0.0.1" if host in _LOOPBACK_NAMES or host.endswith(".localhost") else host


def lock_path(lock_dir: Path, host: str) -> Path:
    """The lock file of a host (its :func:`host_key`; characters outside ``a-z0-9._-``, e.g. IPv6 colons, as ``_``)."""
    return lock_dir / f"{_UNSAFE.sub('_', host_key(host))}.lock"


@dataclass(frozen=True)
class Ending:
    """What a crawl leaves its host's next holder."""

    delay_s: float  # the delay it kept
    resume_at: float = 0.0  # epoch (wall clock) until which the host asked for a pause (Retry-After); 0: none
    blocked: bool = False  # it ended blocked (sustained refusal)


@dataclass(frozen=True)
class Turn:
    waited: float  # seconds waited after getting the locks, for the previous holder's delay or the host's pause
    refused: str | None = None  # why this crawl must send nothing at all


@dataclass(frozen=True)
class _Record:
    ended: float = 0.0
    delay: float = 0.0
    resume_at: float = 0.0
    blocked_run: str | None = None


def _read(f: IO[str], now: float) -> _Record:
    """The previous turn on this file; a ``running`` record (its holder died holding the lock) ends ``now``."""
    f.seek(0)
    text = f.read().strip()
    try:
        rec: dict[str, Any] = json.loads(text)
    except ValueError:
        try:  # the two-number format of earlier versions: "<ended> <delay>"
            ended, delay = (float(x) for x in text.split())
        except ValueError:
            return _Record()
        return _Record(ended, delay)
    if not isinstance(rec, dict):
        return _Record()
    blocked = rec.get("blocked_run")
    return _Record(
        ended=now if rec.get("state") == "running" else float(rec.get("at", 0.0)),
        delay=float(rec.get("delay", 0.0)), resume_at=float(rec.get("resume_at", 0.0)),
        blocked_run=blocked if isinstance(blocked, str) else None,
    )  # fmt: skip


def _write(f: IO[str], **record: Any) -> None:
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record, sort_keys=True) + "\n")
    f.flush()


@contextmanager
def host_turn(
    lock_dir: Path, hosts: Iterable[str], delay_s: float, ending: Callable[[], Ending] | None = None,
    sleep: Callable[[float], None] = time.sleep, run_id: str | None = None, latest: float | None = None,
) -> Iterator[Turn]:
    """Hold every one of ``hosts`` (by :func:`host_key`, sorted, so two crawls never deadlock) for the body.

    ``ending`` (called on release) says what this crawl leaves behind (default: it kept ``delay_s``, no pause,
    not blocked). ``run_id``: a turn is refused when an earlier holder in the same run ended blocked.
    ``latest``: a turn is refused, not slept, when the host's pause or delay would end after it (epoch)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        files = []
        for key in sorted({host_key(h) for h in hosts}):
            f = stack.enter_context(lock_path(lock_dir, key).open("a+", encoding="ascii"))
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            files.append(f)
        now = time.time()
        before = [_read(f, now) for f in files]
        resume_at = max((r.resume_at for r in before), default=0.0)
        not_before = max([now, resume_at, *(r.ended + max(r.delay, delay_s) for r in before)])
        refused = None
        if run_id is not None and any(r.blocked_run == run_id for r in before):
            refused = "the host refused another platform's crawl in this run (blocked); nothing requested"
        elif latest is not None and not_before > latest:
            refused = (f"the host asked for a pause until {time.strftime('%H:%M:%S', time.gmtime(not_before))} "
                       "UTC, after the crawl window; nothing requested")  # fmt: skip
        for f, r in zip(files, before, strict=True):  # a killed holder leaves this behind (see module docstring)
            _write(f, state="running", pid=os.getpid(), at=now, delay=delay_s, resume_at=resume_at,
                   blocked_run=r.blocked_run)
        waited = 0.0 if refused else max(0.0, not_before - time.time())
        if waited:
            sleep(waited)
        try:
            yield Turn(waited, refused)
        finally:
            end = Ending(delay_s) if refused or ending is None else ending()
            for f, r in zip(files, before, strict=True):
                # A blocked run id is kept while it may still matter: by this run's refused turns and by a turn
                # outside any run (``platforms try``); a clean crawl of another run clears it.
                blocked_run = run_id if end.blocked and run_id else (
                    r.blocked_run if refused or run_id is None or r.blocked_run == run_id else None)
                _write(f, state="ended", at=time.time(), delay=max(end.delay_s, delay_s),
                       resume_at=max(resume_at, end.resume_at), blocked_run=blocked_run)
