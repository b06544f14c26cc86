"""The source must carry full row images uncompressed; otherwise the run fails naming the variable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.sources.mysql.preflight import (
    SourcePreflightError,
    check_binlog_settings,
    current_binlog_position,
    oldest_binlog_position,
)
from cdc_pipeline.sources.mysql.row_events import BinlogDecodeError
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness


@contextmanager
def global_variable(harness: PipelineHarness, name: str, value: str) -> Iterator[None]:
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT @@GLOBAL.{name}")
        previous = cursor.fetchone()[0]
        cursor.execute(f"SET GLOBAL {name} = %s", (value,))
    try:
        yield
    finally:
        with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"SET GLOBAL {name} = %s", (previous,))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("binlog_row_metadata", "MINIMAL", "binlog_row_metadata=MINIMAL, expected FULL"),
        ("binlog_row_image", "MINIMAL", "binlog_row_image=MINIMAL, expected FULL"),
        ("binlog_format", "STATEMENT", "binlog_format=STATEMENT, expected ROW"),
        ("log_bin_compress", "ON", "log_bin_compress=ON, expected OFF"),
    ],
)
def test_misconfigured_binlog_is_refused_naming_the_variable(
    harness: PipelineHarness, variable: str, value: str, message: str
) -> None:
    with global_variable(harness, variable, value):
        with pytest.raises(SourcePreflightError, match=message):
            check_binlog_settings(harness.mariadb.settings)
        job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
        result = job.execute_in_process(raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert message in str(failure.step_failure_data.error)


@pytest.fixture
def own_mariadb(tmp_path: Path) -> Iterator[LocalMariaDb]:
    server = LocalMariaDb(tmp_path / "own-mariadb").start()
    yield server
    server.stop()


def test_compressed_events_already_in_the_binlog_stop_the_reader_with_their_position(
    harness: PipelineHarness, own_mariadb: LocalMariaDb
) -> None:
    # A server of its own: the compressed event would stop every later test reading this binlog.
    harness.mariadb = own_mariadb
    with harness.mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{harness.database}`")
    harness.source_execute("CREATE TABLE docs (id INT PRIMARY KEY, body TEXT)")
    with global_variable(harness, "log_bin_compress", "ON"):
        # Fresh sessions pick up the global setting; rows above log_bin_compress_min_len compress.
        harness.source_execute(f"INSERT INTO docs VALUES (1, '{'x' * 2000}')")
    # Compression is off again, so the start-up check passes; the compressed event is still there.
    job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == BinlogDecodeError.__name__
    assert re.search(r"compressed binlog event \(type 0x[0-9a-f]+\) at binlog\.\d+:\d+", cause.message)


def test_a_checkpoint_in_a_purged_binlog_stops_the_run_naming_the_lost_range(harness: PipelineHarness) -> None:
    harness.source_execute("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    harness.replicate()
    checkpoint_file = str(current_binlog_position(harness.mariadb.settings).file)
    harness.source_execute("FLUSH BINARY LOGS", "INSERT INTO t VALUES (2)", "FLUSH BINARY LOGS")
    harness.source_execute(f"PURGE BINARY LOGS TO '{current_binlog_position(harness.mariadb.settings).file}'")
    # The server may keep a file a replication client still reads: ask which one is oldest now.
    oldest_kept = str(oldest_binlog_position(harness.mariadb.settings).file)
    assert oldest_kept != checkpoint_file
    job = harness.definitions().resolve_job_def(f"replicate_{SOURCE}")
    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.cause.message
    assert f"checkpoint {checkpoint_file}:" in message
    assert f"(oldest kept: {oldest_kept})" in message and "were purged" in message


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        (["{db}.custmers"], "tables.include names {db}.custmers, which is not a base table there"),
        (["{db}.Customers"], "tables.include names {db}.Customers, which is not a base table there"),
        (["{db}.archive_*"], "no table matches sources.shop.tables (include ['{db}.archive_*'], exclude [])"),
    ],
)
def test_a_selection_that_takes_no_table_or_names_a_missing_one_is_refused(
    harness: PipelineHarness, include: list[str], expected: str
) -> None:
    """A typo in `tables` must not look like a quiet source: the run fails naming the key."""
    harness.source_execute("CREATE TABLE customers (id INT PRIMARY KEY)", "INSERT INTO customers VALUES (1)")
    harness.configure_source(tables={"include": [pattern.format(db=harness.database) for pattern in include]})
    result = harness.definitions().resolve_job_def(f"replicate_{SOURCE}").execute_in_process(raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.cause.message
    assert expected.format(db=harness.database) in message
    # The right name replicates.
    harness.configure_source(tables={"include": [f"{harness.database}.customers"]})
    harness.replicate()
    assert [row["id"] for row in harness.postgres_rows("customers")] == [1]
