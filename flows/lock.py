"""One pipeline run at a time per state directory: an advisory ``flock`` on ``<state_dir>/run.lock``.

The deployment's concurrency limit stops a scheduled run from overlapping the previous scheduled one; this lock
also stops ``pointcount run`` by hand (or a second ``serve``) from writing to the same warehouse at the same time
(DuckDB allows one writing process). The OS releases a ``flock`` when its process dies, so a crashed run never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "run.lock"


class RunInProgress(RuntimeError):
    """Another pipeline run holds the lock for this state directory."""


@contextmanager
def run_lock(state_dir: Path, run_id: str) -> Iterator[Path]:
    """Hold the state directory's run lock for the duration of the block, or raise RunInProgress at once."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise RunInProgress(
                f"another pointcount run is in progress for {state_dir} ({holder or 'unknown holder'}); "
                "not starting a second one"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run {run_id} pid {os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the lock right now (``"run <id> pid <n>"``), or None when no run is in progress."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown holder"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
