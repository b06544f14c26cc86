"""Reads a chdb sink table in a process of its own (chdb allows one path per process).

stdin: pickled arguments of `read_clickhouse_rows`; stdout: the pickled rows.
"""

from __future__ import annotations

import pickle
import sys

from cdc_pipeline_tests.harness import read_clickhouse_rows

if __name__ == "__main__":
    arguments = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(read_clickhouse_rows(*arguments)))
