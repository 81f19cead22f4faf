"""Pause the cyclic garbage collector while a call builds many objects that all stay alive.

Validating a chart of 20,000 resources allocates hundreds of thousands of model objects that live until
the call ends; each allocation burst makes the collector walk every live object again, which took more
time than the validation itself. Reference counting still frees everything as usual; only the search
for reference cycles waits. Counted across threads: the collector runs again when the last call using
it is done, and only if it was running before the first one began.
"""
from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_was_enabled = False


class collector_paused:
    """`with collector_paused():` the collector waits until the block ends (and every other such block with it). A
    class, not a @contextmanager generator: that one made five Python calls a use (its helper, the wrapper's
    __init__, __enter__, __exit__, the generator twice), two of them a first-seen call's."""
    __slots__ = ()

    def __enter__(self) -> None:
        global _holders, _was_enabled
        with _lock:
            if _holders == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _holders += 1

    def __exit__(self, *exc_info) -> None:
        global _holders
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
