"""Processes waiting for an embedded ClickHouse (chdb) path say so, so the process holding it can let go.

chdb serves an on-disk path to one process, for as long as that process lives. A streaming run holds
it for its whole lifetime; an initial-load chunk, a DLQ replay or a check that needs the same path
would wait until it times out. While a process waits for the path it keeps a file named after its
pid in `<path>.waiting/`; the streaming run looks there between batches and ends (its successor
queues behind the waiting work). Files of processes that died are ignored and removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _waiting_dir(path: str) -> Path:
    return Path(path.rstrip("/") + ".waiting")


@contextmanager
def announce_waiting(path: str) -> Iterator[None]:
    """Say that this process waits for `path` until the block ends."""
    directory = _waiting_dir(path)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / str(os.getpid())
    marker.touch()
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            marker.unlink()


def other_processes_waiting(path: str) -> list[int]:
    """Live processes other than this one that wait for `path`."""
    directory = _waiting_dir(path)
    if not directory.is_dir():
        return []
    waiting = []
    for marker in directory.iterdir():
        if not marker.name.isdigit() or int(marker.name) == os.getpid():
            continue
        pid = int(marker.name)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with suppress(FileNotFoundError):
                marker.unlink()  # it died waiting
            continue
        except PermissionError:
            pass  # alive, another user's
        waiting.append(pid)
    return waiting
