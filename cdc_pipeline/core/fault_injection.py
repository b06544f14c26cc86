"""Named crash points, so the crash tests can kill -9 the process at an exact step of a batch.

Inert unless $CDC_CRASH_AT names the point; it costs one dict lookup where it stands.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "CDC_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
