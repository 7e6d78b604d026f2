"""Crawl progress from the crawl tasks to whoever is watching in this process (the CLI's rich display).

The crawl's progress callback runs in a task thread; a Prefect task parameter cannot carry a callable, so the
CLI registers a sink here and the crawl task forwards each event. Events are reduced to numbers first: whatever
a stage puts in an event, no string from a page can reach the terminal or Prefect's logs through this path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

Event = dict[str, int | float | str]
Sink = Callable[[str, Event], None]

# The only string values passed on: event names we know, and the run's own lifecycle words.
KNOWN_EVENTS = frozenset({"progress", "start", "started", "finish", "finished", "paused", "retry", "attempt"})

_sinks: list[Sink] = []
_lock = threading.Lock()


def sanitise(event: dict[str, Any]) -> Event:
    """Keep numeric fields and a known event name; drop everything else."""
    clean: Event = {}
    for key, value in event.items():
        if isinstance(value, bool):
            clean[str(key)] = int(value)
        elif isinstance(value, int | float):
            clean[str(key)] = value
    name = event.get("event")
    clean["event"] = name if isinstance(name, str) and name in KNOWN_EVENTS else "progress"
    return clean


def emit(platform: str, event: dict[str, Any]) -> None:
    """Forward one event for ``platform`` to every registered sink; a failing sink never breaks a crawl."""
    clean = sanitise(event)
    with _lock:
        sinks = list(_sinks)
    for sink in sinks:
        with suppress(Exception):  # a display problem must not fail the crawl
            sink(platform, clean)


@contextmanager
def progress_sink(sink: Sink) -> Iterator[None]:
    with _lock:
        _sinks.append(sink)
    try:
        yield
    finally:
        with _lock:
            _sinks.remove(sink)
