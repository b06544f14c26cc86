"""Termination at a batch boundary: the first SIGINT/SIGTERM asks the loop to stop after its batch.

Terminating a run from the UI (or Ctrl-C under `dagster job execute`, or SIGTERM from Kubernetes)
interrupts the run's process; by default Dagster turns that into an exception wherever the op
happens to be. A continuous run instead finishes the batch in hand, so the run ends with every
sink at a checkpoint it chose. A second signal interrupts at once, as Dagster would (kill -9 at any
point converges too: checkpoints move with the data).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_at_batch_boundary() -> Iterator[threading.Event]:
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be set from the main thread; elsewhere Dagster's own handling stays.
        yield stop
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
