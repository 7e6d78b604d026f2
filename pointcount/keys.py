"""Linkage keys: one secret HMAC key per linkage period, kept outside the warehouse and exports.

A key lives in ``<keys dir>/<period>.key`` (directory 0700, file 0600). Everything the crawl edge keeps about a
listing or an advertiser is ``HMAC-SHA256(key, value)``; the same key within a period links an advertiser across
runs and platforms. ``destroy_expired`` deletes keys a configured number of days after their period ends; from
then on nothing stored can be linked back to a listing reference or a phone number, even with this code.
"""

from __future__ import annotations

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


class KeyStore:
    """Owner-only directory of per-period HMAC keys."""

    def __init__(self, directory: Path | str, destroy_after_days: int = 7):
        self.dir = Path(directory).expanduser()
        self.destroy_after_days = destroy_after_days

    def _path(self, pid: str) -> Path:
        return self.dir / f"{pid}.key"

    def destroy_on(self, pid: str) -> date:
        return period_bounds(pid)[1] + timedelta(days=self.destroy_after_days + 1)

    def key(self, pid: str, create: bool = True) -> bytes:
        """The key of a period, created (0600) on first use. A destroyed period's key is never recreated."""
        path = self._path(pid)
        if path.exists():
            return path.read_bytes()
        if not create:
            raise KeyError(f"no key for linkage period {pid}")
        if date.today() >= self.destroy_on(pid):
            raise KeyError(f"linkage period {pid} has ended and its key is past its destruction date")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
        return path.read_bytes()

    def list(self) -> list[KeyInfo]:
        if not self.dir.exists():
            return []
        infos = []
        for path in sorted(self.dir.glob("*.key")):
            pid = path.stem
            created = date.fromtimestamp(path.stat().st_mtime)
            infos.append(KeyInfo(pid, path, created, self.destroy_on(pid)))
        return infos

    def destroy(self, pid: str) -> bool:
        """Overwrite then delete a period's key. Returns False when there was none."""
        path = self._path(pid)
        if not path.exists():
            return False
        with path.open("r+b") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        return True

    def destroy_expired(self, today: date | None = None) -> list[str]:
        today = today or date.today()
        return [info.period for info in self.list() if today >= info.destroy_on and self.destroy(info.period)]


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
