"""`python -m cdc_pipeline.embedded stop`: stop the embedded default's servers (their data stays).

They stop by themselves when the last process using them exits normally; this is for the case
where such a process was killed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cdc_pipeline.embedded.environment import EmbeddedEnvironment


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cdc_pipeline.embedded", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["stop"])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $CDC_EMBEDDED_DATA or ./.cdc_data")
    args = parser.parse_args()
    EmbeddedEnvironment.shut_down(args.data_dir)


if __name__ == "__main__":
    main()
