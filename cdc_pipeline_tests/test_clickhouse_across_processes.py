"""Each batch in a process of its own, as the Dagster daemon launches runs: the ClickHouse tables keep their
identity and their tombstones (issue 11, item 5).

A new process knows the sink tables only from ClickHouse itself (system.tables); misreading a table's key
there re-keys the table (copy + EXCHANGE TABLES, a new uuid) at its first batch and drops the tombstones that
stop a late replay from resurrecting deleted rows. Tests that run many batches in one process never see it.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from cdc_pipeline.core.sink_names import sink_table_name
from cdc_pipeline.mapping.sink_types import DELETED_COLUMN, VERSION_COLUMN
from cdc_pipeline.sinks.clickhouse.identifiers import quote_identifier
from cdc_pipeline_tests.harness import SOURCE, PipelineHarness, assert_same_rows, run_replication_cli

# The one-column key the bug misread as `(id)`; two columns; names that need quoting (one column and two).
ODD_ONE_KEY = "the key, `1`"  # a comma, a space and backticks
ODD_TWO_KEY = ("région, x", "n`o")
# source table -> its key columns (in sink order), and a column without a backtick to order source rows by
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "accounts": (("id",), "id"),
    "ledger": (("region", "seq"), "seq"),
    "odd_one": ((ODD_ONE_KEY,), "note"),
    "odd_two": (ODD_TWO_KEY, "v"),
}


def _maria(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def create_tables(harness: PipelineHarness) -> None:
    harness.source_execute(
        "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(64), balance DECIMAL(20,4))",
        "CREATE TABLE ledger (region VARCHAR(8), seq INT, amount DECIMAL(12,3), PRIMARY KEY (region, seq))",
        f"CREATE TABLE odd_one ({_maria(ODD_ONE_KEY)} INT PRIMARY KEY, note VARCHAR(32))",
        f"CREATE TABLE odd_two ({_maria(ODD_TWO_KEY[0])} VARCHAR(8), {_maria(ODD_TWO_KEY[1])} INT, v INT,"
        f" PRIMARY KEY ({_maria(ODD_TWO_KEY[0])}, {_maria(ODD_TWO_KEY[1])}))",
    )


def change(harness: PipelineHarness, round_number: int, deleted: dict[str, set[tuple[Any, ...]]]) -> None:
    """Round 0 inserts rows; later rounds insert more, update some and delete some (recorded in `deleted`)."""
    base = round_number * 100
    region = f"r{round_number}"
    harness.source_execute(
        "BEGIN",
        *[f"INSERT INTO accounts VALUES ({base + i}, 'acct {base + i} 😀', {i}.25)" for i in range(10)],
        *[f"INSERT INTO ledger VALUES ('{region}', {i}, {i * 7}.125)" for i in range(6)],
        *[f"INSERT INTO odd_one VALUES ({base + i}, 'note {i}')" for i in range(6)],
        *[f"INSERT INTO odd_two VALUES ('é{round_number}', {i}, {i * 3})" for i in range(6)],
        "COMMIT",
    )
    if round_number == 0:
        return
    previous = base - 100
    old_region = f"r{round_number - 1}"
    harness.source_execute(
        f"UPDATE accounts SET balance = balance * 2, name = CONCAT(name, ' upd') WHERE id BETWEEN {previous}"
        f" AND {previous + 4}",
        f"DELETE FROM accounts WHERE id IN ({previous + 5}, {previous + 6})",
        f"UPDATE accounts SET id = {previous + 57} WHERE id = {previous + 7}",  # a key move: the old key is deleted
        f"UPDATE ledger SET amount = -amount WHERE region = '{old_region}' AND seq < 3",
        f"DELETE FROM ledger WHERE region = '{old_region}' AND seq = 4",
        f"UPDATE odd_one SET note = CONCAT(note, ' upd') WHERE {_maria(ODD_ONE_KEY)} = {previous}",
        f"DELETE FROM odd_one WHERE {_maria(ODD_ONE_KEY)} IN ({previous + 1}, {previous + 2})",
        f"UPDATE odd_two SET v = v + 1000 WHERE {_maria(ODD_TWO_KEY[0])} = 'é{round_number - 1}'",
        f"DELETE FROM odd_two WHERE {_maria(ODD_TWO_KEY[0])} = 'é{round_number - 1}' AND {_maria(ODD_TWO_KEY[1])} = 5",
    )
    deleted["accounts"] |= {(previous + 5,), (previous + 6,), (previous + 7,)}
    deleted["ledger"].add((old_region, 4))
    deleted["odd_one"] |= {(previous + 1,), (previous + 2,)}
    deleted["odd_two"].add((f"é{round_number - 1}", 5))


def read_sink_tables(
    chdb_dsn: str, database: str, source_database: str, tables: dict[str, tuple[dict[str, str], tuple[str, ...], str]]
) -> dict[str, tuple[str, set[tuple[Any, ...]], list[dict[str, Any]]]]:
    """Per source table: the sink table's uuid, the keys whose newest row is a tombstone, and the live rows.

    Run in a fresh process (the chdb path belongs to one process at a time). Tombstones are read without FINAL:
    ReplacingMergeTree(_version, _is_deleted) keeps them through merges (only OPTIMIZE ... CLEANUP drops them),
    while FINAL hides them; the newest version of each key says whether it is deleted.
    """
    from cdc_pipeline.sinks.clickhouse.resource import ClickHouseSinkResource
    from cdc_pipeline_tests.harness import CH_SINK, read_clickhouse_rows

    client = ClickHouseSinkResource(dsn=chdb_dsn, database=database).sink(CH_SINK).client
    found: dict[str, tuple[str, set[tuple[Any, ...]], list[dict[str, Any]]]] = {}
    for table, (types, key_columns, order_by) in tables.items():
        name = sink_table_name(f"{source_database}.{table}")
        uuid = client.query(
            "SELECT toString(uuid) FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": name},
        ).result_rows[0][0]
        keys = ", ".join(quote_identifier(k) for k in key_columns)
        newest_deleted = f"argMax({quote_identifier(DELETED_COLUMN)}, {quote_identifier(VERSION_COLUMN)})"
        tombstones = client.query(
            f"SELECT {keys} FROM {quote_identifier(database)}.{quote_identifier(name)}"
            f" GROUP BY {keys} HAVING {newest_deleted} = 1"
        ).result_rows
        rows = read_clickhouse_rows(chdb_dsn, database, f"{source_database}.{table}", types, order_by)
        found[table] = (str(uuid), {tuple(row) for row in tombstones}, rows)
    return found


def read_sink_tables_in_a_fresh_process(harness: PipelineHarness) -> dict[str, Any]:
    tables = {table: (harness.source_column_types(table), keys, order) for table, (keys, order) in TABLES.items()}
    arguments = (harness.chdb_dsn, f"{harness.database}_ch", harness.database, tables)
    completed = subprocess.run(
        [sys.executable, "-m", __name__], input=pickle.dumps(arguments), capture_output=True, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
    return pickle.loads(completed.stdout)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(map(str, r.values())))


def test_each_batch_in_a_new_process_keeps_the_clickhouse_tables_and_their_tombstones(
    harness: PipelineHarness, tmp_path: Path
) -> None:
    harness.use_private_clickhouse()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    create_tables(harness)
    deleted: dict[str, set[tuple[Any, ...]]] = {table: set() for table in TABLES}
    first_uuids: dict[str, str] = {}
    for round_number in range(3):
        change(harness, round_number, deleted)
        run = run_replication_cli(harness.write_config_file(), dagster_home, SOURCE)  # a process of its own
        assert run.returncode == 0, run.stderr[-3000:]
        sink = read_sink_tables_in_a_fresh_process(harness)
        for table, (uuid, tombstones, rows) in sink.items():
            where = f"process {round_number + 1}, {table}"
            first_uuids.setdefault(table, uuid)
            assert uuid == first_uuids[table], f"{where}: the table was replaced (re-keyed) by a new process"
            assert tombstones == deleted[table], (
                f"{where}: tombstones {tombstones}, deleted at the source {deleted[table]}"
            )
            order_by = TABLES[table][1]
            source = _sorted(harness.source_rows(table, order_by))
            assert_same_rows(_sorted(rows), source, f"ClickHouse {where}")
            assert_same_rows(_sorted(harness.postgres_rows(table, order_by)), source, f"PostgreSQL {where}")


if __name__ == "__main__":
    # stdin: pickled arguments of read_sink_tables; stdout: its pickled answer.
    sys.stdout.buffer.write(pickle.dumps(read_sink_tables(*pickle.loads(sys.stdin.buffer.read()))))
