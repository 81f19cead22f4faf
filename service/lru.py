"""A bounded map shared by a worker's threads, least recently used out first.

Bounded by entries and, when given, by approximate bytes: each entry is put with its weight (what it holds in
memory, as the caller estimates it), so a few huge entries cannot take what a thousand small ones would.
Named maps report their entries and bytes (`sizes`, for /metrics).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

_named: "weakref.WeakSet[Lru]" = weakref.WeakSet()


class Lru:
    """Size 0 keeps nothing: every get misses, every put is dropped. max_bytes 0: no bound by bytes."""

    def __init__(self, size: int, max_bytes: int = 0, name: str | None = None):
        self.size, self.max_bytes, self.name = size, max_bytes, name
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()    # key -> (value, weight)
        self._lock = threading.Lock()
        if name:
            _named.add(self)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, weight: int = 0) -> None:
        """Remember value under key; `weight`: its approximate size in bytes (key included). An entry heavier than
        max_bytes on its own is not kept."""
        if self.size <= 0 or (self.max_bytes and weight > self.max_bytes):
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._items[key] = (value, weight)
            self.bytes += weight
            while len(self._items) > self.size or (self.max_bytes and self.bytes > self.max_bytes):
                self.bytes -= self._items.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._items)


def sizes() -> dict[str, tuple[int, int]]:
    """name -> (entries, bytes) of the named maps alive in this process, summed by name."""
    totals: dict[str, tuple[int, int]] = {}
    for cache in list(_named):
        entries, weight = totals.get(cache.name, (0, 0))
        totals[cache.name] = (entries + len(cache), weight + cache.bytes)
    return totals
