"""Named crash points, so the crash tests can kill -9 the process at an exact step of a batch.

Inert unless $CDC_CRASH_AT names the point; it costs one dict lookup where it stands. With
$CDC_CRASH_ON_HIT=N the process dies the Nth time it reaches the point (default the first), so a
test can let a long-lived run deliver some batches before it dies mid-way through a later one.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_AT_ENV = "CDC_CRASH_AT"
CRASH_ON_HIT_ENV = "CDC_CRASH_ON_HIT"

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT_ENV) != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(os.environ.get(CRASH_ON_HIT_ENV, "1")):
        os.kill(os.getpid(), signal.SIGKILL)
