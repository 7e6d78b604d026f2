"""Linkage keys: one secret HMAC key per linkage period, kept outside the warehouse and exports.

A key lives in ``<keys dir>/<period>.key`` (directory 0700, file 0600). Everything the crawl edge keeps about a
listing or an advertiser is ``HMAC-SHA256(key, value)``; the same key within a period links an advertiser across
runs and platforms. ``destroy_expired`` deletes keys a configured number of days after their period ends; from
then on nothing stored can be linked back to a listing reference or a phone number, even with this code.

Destruction overwrites the file in place with random bytes (fsync), unlinks it (fsync of the directory) and
leaves a tombstone ``<period>.destroyed`` holding only the period and the date, so the period's key is never
recreated and ``pointcount keys`` can show when it went. See docs/privacy.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

KEY_BYTES = 32


def period_id(day: date, period: str) -> str:
    """The linkage period containing ``day``: ``2026-11`` (month), ``2026-W48`` (ISO week) or ``2026-11-29``."""
    if period == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period == "day":
        return day.isoformat()
    raise ValueError(f"unknown linkage period {period!r}")


def period_bounds(pid: str) -> tuple[date, date]:
    """First and last day of a period id."""
    if "-W" in pid:
        year, week = pid.split("-W")
        start = date.fromisocalendar(int(year), int(week), 1)
        return start, start + timedelta(days=6)
    parts = pid.split("-")
    if len(parts) == 2:
        start = date(int(parts[0]), int(parts[1]), 1)
        nxt = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        return start, nxt - timedelta(days=1)
    day = date.fromisoformat(pid)
    return day, day


@dataclass(frozen=True)
class KeyInfo:
    period: str
    path: Path
    created: date
    destroy_on: date
    destroyed: date | None = None  # set for a tombstone: the key is gone, only the record remains

    @property
    def exists(self) -> bool:
        return self.destroyed is None


@dataclass(frozen=True)
class Rotation:
    """What ``KeyStore.rotate`` did."""

    current: str  # the period the key is now for (created if it was missing)
    destroyed: list[str]  # periods whose keys were destroyed now


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the unlink has still happened
        pass
    finally:
        os.close(fd)


class KeyStore:
    """Owner-only directory of per-period HMAC keys."""

    def __init__(self, directory: Path | str, destroy_after_days: int = 7):
        self.dir = Path(directory).expanduser()
        self.destroy_after_days = destroy_after_days

    def _path(self, pid: str) -> Path:
        return self.dir / f"{pid}.key"

    def _tombstone(self, pid: str) -> Path:
        return self.dir / f"{pid}.destroyed"

    def destroy_on(self, pid: str) -> date:
        return period_bounds(pid)[1] + timedelta(days=self.destroy_after_days + 1)

    def key(self, pid: str, create: bool = True, today: date | None = None) -> bytes:
        """The key of a period, created (0600) on first use. A destroyed period's key is never recreated."""
        path = self._path(pid)
        if path.exists():
            return path.read_bytes()
        if not create:
            raise KeyError(f"no key for linkage period {pid}")
        if self._tombstone(pid).exists():
            raise KeyError(f"the key of linkage period {pid} was destroyed; it is never recreated")
        if (today or date.today()) >= self.destroy_on(pid):
            raise KeyError(f"linkage period {pid} has ended and its key is past its destruction date")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        # Write a private temporary file, then link it into place: the key appears whole or not at all, and a
        # concurrent creator loses the race cleanly (FileExistsError) instead of reading a half-written file.
        tmp = self.dir / f".{pid}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made the period's key first: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_bytes()

    def current(self, period: str = "month", today: date | None = None) -> tuple[str, bytes]:
        """The period containing ``today`` and its key (created when missing)."""
        today = today or date.today()
        pid = period_id(today, period)
        return pid, self.key(pid, today=today)

    def list(self) -> list[KeyInfo]:
        """Keys on disk, oldest period first (destroyed ones are in ``history``)."""
        if not self.dir.exists():
            return []
        infos = []
        for path in sorted(self.dir.glob("*.key")):
            pid = path.stem
            created = date.fromtimestamp(path.stat().st_mtime)
            infos.append(KeyInfo(pid, path, created, self.destroy_on(pid)))
        return infos

    def history(self) -> list[KeyInfo]:
        """Every period this store has known: live keys and tombstones of destroyed ones, by period."""
        infos = {info.period: info for info in self.list()}
        if self.dir.exists():
            for stone in sorted(self.dir.glob("*.destroyed")):
                pid = stone.stem
                if pid in infos:
                    continue
                when = date.fromisoformat(stone.read_text().split()[1])
                infos[pid] = KeyInfo(pid, self._path(pid), when, self.destroy_on(pid), destroyed=when)
        return [infos[p] for p in sorted(infos, key=lambda p: period_bounds(p)[0])]

    def destroy(self, pid: str, today: date | None = None) -> bool:
        """Overwrite then delete a period's key. Returns False when there was none."""
        path = self._path(pid)
        if not path.exists():
            return False
        size = max(path.stat().st_size, KEY_BYTES)
        with path.open("r+b") as fh:
            fh.write(secrets.token_bytes(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        self._tombstone(pid).write_text(f"{pid} {(today or date.today()).isoformat()}\n")
        _fsync_dir(self.dir)
        return True

    def destroy_expired(self, today: date | None = None) -> list[str]:
        today = today or date.today()
        return [
            info.period for info in self.list() if today >= info.destroy_on and self.destroy(info.period, today)
        ]

    def rotate(self, period: str = "month", today: date | None = None) -> Rotation:
        """Destroy every key past its destruction date, then make sure the current period has a key."""
        today = today or date.today()
        destroyed = self.destroy_expired(today)
        pid, _ = self.current(period, today)
        return Rotation(current=pid, destroyed=destroyed)

    def permission_problems(self) -> list[str]:
        """Owner-only checks: the directory must be 0700 and every key 0600."""
        problems = []
        if self.dir.exists() and self.dir.stat().st_mode & 0o077:
            mode = self.dir.stat().st_mode & 0o777
            problems.append(f"{self.dir}: key directory is accessible to others (mode {mode:o})")
        for info in self.list():
            mode = info.path.stat().st_mode & 0o777
            if mode & 0o077:
                problems.append(f"{info.path}: key file is accessible to others (mode {mode:o})")
        return problems


class Pseudonymiser:
    """Keyed hashes for the crawl edge. Raw values go in, only hex digests come out."""

    def __init__(self, key: bytes):
        self._key = key

    def _digest(self, *parts: str) -> str:
        return hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()

    def listing(self, platform: str, listing_ref: str) -> str:
        return self._digest("listing", platform, listing_ref)

    def advertiser(self, kind: str, normalised_value: str) -> str:
        """Platform-independent, so the same phone number links listings across platforms."""
        return self._digest("advertiser", kind, normalised_value)
