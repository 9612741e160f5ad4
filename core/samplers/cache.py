"""A small memo of time grids and per-step solver coefficients, so that repeated ``sample()`` calls with
the same process, grid and step count build them once.

Entries are kept per process object (a weak reference: they go when the process goes), at most
:data:`MAX_ENTRIES` per process, least recently used first out. Keys are the grid's own values (float64
bytes) and the sampler's options, so equal grids share coefficients whatever made them. Processes are
treated as immutable once built (every built-in one is); call :func:`clear_cache` after changing one in place.
Grids with per-sample start times are not cached (their keys would rarely repeat).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 64
_store: "weakref.WeakKeyDictionary[object, OrderedDict]" = weakref.WeakKeyDictionary()
_stats: dict[str, list[int]] = {}
_lock = threading.Lock()


def cached(process, tag: str, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s value for (process, tag, key), built on the first call only. ``tag`` names what is built
    (``"grid"``, a sampler's name) and is what :func:`cache_info` counts by."""
    counts = _stats.setdefault(tag, [0, 0])
    try:
        with _lock:
            table = _store.get(process)
            if table is None:
                table = _store[process] = OrderedDict()
            full = (tag, key)
            if full in table:
                table.move_to_end(full)
                counts[0] += 1
                return table[full]
    except TypeError:  # a process that is unhashable or cannot be weakly referenced: no caching
        counts[1] += 1
        return build()
    value = build()
    with _lock:
        counts[1] += 1
        table[full] = value
        while len(table) > MAX_ENTRIES:
            table.popitem(last=False)
    return value


def cache_info() -> dict[str, dict[str, int]]:
    """Hits and builds per tag since the last :func:`clear_cache`, e.g. ``{"grid": {"hits": 1, "builds": 1}}``."""
    return {tag: {"hits": h, "builds": b} for tag, (h, b) in _stats.items()}


def clear_cache() -> None:
    """Forget every cached grid and coefficient table and reset the counters."""
    with _lock:
        _store.clear()
        _stats.clear()


__all__ = ["cached", "cache_info", "clear_cache", "MAX_ENTRIES"]
