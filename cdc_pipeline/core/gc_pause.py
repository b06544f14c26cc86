"""Pausing Python's cyclic garbage collector while a batch's objects are built.

A batch holds hundreds of thousands of small objects (changes, their values and cell writes) until
it is written. The cyclic collector walks every tracked object each time it runs a full collection,
and it runs more often the more objects are created: building a 69,000-change Cassandra batch spent
half its time in it (measured: decoding 1.6-2.0 s paused against 3.3-4.3 s with it running). None of
these objects forms a reference cycle, so reference counting frees them either way; the pause only
skips the walks. Cycles made meanwhile are collected once the pause ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Within the block the cyclic collector does not run (reference counting still frees objects)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
