"""A pipeline that ran before checkpoints became opaque resumes where it was.

The sinks' checkpoint tables are written in the form before (position, gtid, server_id; ClickHouse
also `progress`) by the statements that version used, holding a checkpoint past rows the sinks never
got; then `dagster job execute` replicates in a process of its own. The sinks must take only what
came after that checkpoint (a checkpoint that was not read would replicate everything), and keep
their next checkpoint in the current form.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2

from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline_tests.harness import CH_SINK, SOURCE, PipelineHarness, run_replication_cli

_OLD_CLICKHOUSE_TABLE = (
    " (source String, position String, gtid Nullable(String), server_id Nullable(UInt64),"
    " progress UInt64, updated_at DateTime64(6, 'UTC') DEFAULT now64(6))"
    " ENGINE = ReplacingMergeTree(progress) ORDER BY source"
)


def _clickhouse(arguments: tuple[str, str, str, dict[str, Any] | None]) -> dict[str, Any]:
    """In a process of its own (the runs own the chdb path): write the old table's row, or read back."""
    chdb_dsn, database, action, row = arguments
    sink = ClickHouseSinkResource(dsn=chdb_dsn, database=database).sink(CH_SINK)
    table = f"{quote_identifier(database)}.`_cdc_checkpoints`"
    if action == "write_old":
        assert row is not None
        # Opening the sink made its table in the current form: the old version's takes its place.
        sink.client.command(f"DROP TABLE {table}")
        sink.client.command(f"CREATE TABLE {table}{_OLD_CLICKHOUSE_TABLE}")
        sink.client.insert(table, [list(row.values())], column_names=list(row))
        return {}
    checkpoint = sink.checkpoint(SOURCE)
    current = sink.client.query(f"SELECT count() FROM {table} WHERE position_order IS NOT NULL").result_rows[0][0]
    return {"checkpoint": str(checkpoint), "rows_in_current_form": int(current)}


def _clickhouse_in_a_fresh_process(*arguments: Any) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", __name__], input=pickle.dumps(arguments), capture_output=True, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = pickle.loads(completed.stdout)
    return result


def _write_old_postgres_checkpoint(pg_dsn: str, position: BinlogPosition, server_id: int) -> None:
    with closing(psycopg2.connect(pg_dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA replica")
        cursor.execute(
            "CREATE TABLE replica._cdc_checkpoints (source text PRIMARY KEY, position text NOT NULL,"
            " gtid text, server_id bigint, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor.execute(
            "INSERT INTO replica._cdc_checkpoints (source, position, server_id) VALUES (%s, %s, %s)",
            (SOURCE, str(position), server_id),
        )


def _postgres_checkpoint_row(pg_dsn: str) -> tuple[Any, ...]:
    with closing(psycopg2.connect(pg_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT position, position_order IS NOT NULL, version_floor IS NOT NULL, gtid FROM replica._cdc_checkpoints"
        )
        rows = cursor.fetchall()
    assert len(rows) == 1, rows
    return tuple(rows[0])


def test_checkpoints_of_the_form_before_are_resumed_from_and_rewritten(
    harness: PipelineHarness, tmp_path: Path
) -> None:
    harness.use_private_clickhouse()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20))", "INSERT INTO t VALUES (1, 'a')")
    harness.source_execute("INSERT INTO t VALUES (2, 'b')", "INSERT INTO t VALUES (3, 'c')")
    before = current_binlog_position(harness.mariadb.settings)
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT @@server_id")
        server_id = int(cursor.fetchone()[0])
    # The sinks ran before: their checkpoints (old form) stand past rows 1-3.
    _write_old_postgres_checkpoint(harness.pg_dsn, before, server_id)
    old_row = {
        "source": SOURCE,
        "position": str(before),
        "gtid": None,
        "server_id": server_id,
        "progress": before.version_floor,
    }
    _clickhouse_in_a_fresh_process(harness.chdb_dsn, f"{harness.database}_ch", "write_old", old_row)
    harness.source_execute("INSERT INTO t VALUES (4, 'd')", "UPDATE t SET note = 'e' WHERE id = 2")

    run = run_replication_cli(harness.write_config_file(), dagster_home, SOURCE)
    assert run.returncode == 0, run.stderr[-3000:]

    # From the old checkpoints on: row 4, and row 2's update (an upsert of the whole row).
    expected = [{"id": 2, "note": "e"}, {"id": 4, "note": "d"}]
    assert harness.postgres_rows("t") == expected
    assert harness.clickhouse_rows("t") == expected
    after = str(current_binlog_position(harness.mariadb.settings))
    assert _postgres_checkpoint_row(harness.pg_dsn) == (after, True, True, None)
    clickhouse = _clickhouse_in_a_fresh_process(harness.chdb_dsn, f"{harness.database}_ch", "read", None)
    assert clickhouse == {"checkpoint": after, "rows_in_current_form": 1}


if __name__ == "__main__":
    # stdin: pickled arguments of _clickhouse; stdout: its pickled answer.
    sys.stdout.buffer.write(pickle.dumps(_clickhouse(pickle.loads(sys.stdin.buffer.read()))))
