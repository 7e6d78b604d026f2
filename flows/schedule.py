"""Schedule arithmetic shared by ``serve`` and ``status``: next cron fire time and the crawl window."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from croniter import croniter

from pointcount.config import Crawl, Schedule


def next_run(schedule: Schedule, after: datetime | None = None) -> datetime:
    """The next time the cron fires, in the schedule's time zone (cron is read as local wall-clock time)."""
    tz = ZoneInfo(schedule.timezone)
    start = (after or datetime.now(tz)).astimezone(tz)
    return croniter(schedule.cron, start).get_next(datetime)


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_crawl_window(crawl: Crawl, schedule: Schedule, now: datetime | None = None) -> bool:
    """Whether local time (schedule.timezone) is inside [window_start, window_end]; the end minute is included
    and a window may wrap midnight (e.g. 22:00-06:00)."""
    tz = ZoneInfo(schedule.timezone)
    local = (now or datetime.now(tz)).astimezone(tz).time().replace(second=0, microsecond=0)
    start, end = _hhmm(crawl.window_start), _hhmm(crawl.window_end)
    if start <= end:
        return start <= local <= end
    return local >= start or local <= end
