"""The Cassandra source against a real Cassandra 5 node: commit-log changes become cell-level
RowChanges, batches resume exactly from checkpoints, new tables are picked up, and release() frees
cdc_raw only behind every sink.

Every write carries an explicit write time (T0 + its number), so each expected RowChange follows from
the statement the test wrote, not from what the code produced.
"""

from __future__ import annotations

import datetime
import os
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
from cassandra import WriteFailure

from cdc_pipeline.config.loading import PipelineConfigError, parse_pipeline_config
from cdc_pipeline.config.sources import CassandraSourceConfig, TableSelection
from cdc_pipeline.core.cells import CellChange, CellWrite, ClusteringBound, CollectionWrite, ElementWrite, RangeDeletion
from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, RowChange
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.defs.asset_keys import sink_table_asset_key, snapshot_asset_key
from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.local_servers.cassandra import LocalCassandra
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource, CassandraSourceError
from cdc_pipeline.sources.cassandra.changes import COUNTER_REASON
from cdc_pipeline.sources.cassandra.connection import CassandraSourceSettings
from cdc_pipeline.sources.cassandra.node_config import NodeConfigError
from cdc_pipeline.sources.cassandra.positions import CommitLogPosition
from cdc_pipeline_tests.polling import wait_until

T0 = 1_700_000_000_000_000  # microseconds
SECONDS = T0 // 1_000_000


def _source(
    cassandra: LocalCassandra, keyspace: str, state_dir: Path, include: list[str] | None = None
) -> CassandraChangeSource:
    config = CassandraSourceConfig(
        kind="cassandra",
        hosts=[cassandra.host],
        port=cassandra.port,
        cassandra_yaml=str(cassandra.base_dir / "cassandra.yaml"),
        tables=TableSelection(include=include or [f"{keyspace}.*"]),
    )
    settings = CassandraSourceSettings("cass", (cassandra.host,), cassandra.port)
    return CassandraChangeSource("cass", settings, config, state_dir=state_dir)


def _read_all(source: CassandraChangeSource, max_rows: int = 10**6) -> list[ChangeBatch]:
    """Batches from the start of cdc_raw until a batch ends where it started (one sink, its checkpoint
    moved to each batch's end)."""
    batches: list[ChangeBatch] = []
    checkpoint: Checkpoint | None = None
    while True:
        batch = source.read_batch({"sink": checkpoint}, None, max_rows)
        batches.append(batch)
        if checkpoint is not None and batch.end == checkpoint:
            return batches
        checkpoint = batch.end


def _changes(batches: list[ChangeBatch], table: str) -> list[RowChange]:
    return [change for batch in batches if table in batch.tables for change in batch.tables[table].changes]


def _without_position(change: RowChange) -> RowChange:
    return RowChange(change.op, change.values, change.version, "", change.commit_ts, change.cells)


def test_every_change_kind_becomes_the_expected_cell_changes(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(
        f"CREATE TABLE {ks}.orders (region text, customer int, day date, seq int, amount decimal, note text,"
        " tags set<text>, attrs map<text, int>, names frozen<map<int, text>>, shipped timestamp, ref uuid, data blob,"
        " ratio double, big varint, flag text static,"
        " PRIMARY KEY ((region, customer), day, seq)) WITH CLUSTERING ORDER BY (day DESC, seq ASC) AND cdc = true"
    )
    session.execute(f"CREATE TABLE {ks}.hits (id int PRIMARY KEY, n counter) WITH cdc = true")
    row_1 = "region = 'eu' AND customer = 7 AND day = '2024-05-06' AND seq = 1"
    session.execute(
        f"INSERT INTO {ks}.orders (region, customer, day, seq, amount, note, tags, attrs, names, shipped, ref, data,"
        " ratio, big, flag) VALUES ('eu', 7, '2024-05-06', 1, 12.50, 'first', {'a', 'b'}, {'k': 1},"
        " {1: 'one', 2: 'two'}, 1700000000123, 5B6962DD-3F90-4C93-8F61-EABFA4A5E3B9, 0xCAFE, Infinity,"
        f" 12345678901234567890, 'F') USING TIMESTAMP {T0 + 1}"
    )
    session.execute(f"UPDATE {ks}.orders USING TIMESTAMP {T0 + 2} SET note = null, attrs['j'] = 5 WHERE {row_1}")
    before_ttl = int(time.time())
    session.execute(
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 7, '2024-05-07', 2, 'ttl')"
        f" USING TIMESTAMP {T0 + 3} AND TTL 3600"
    )
    after_ttl = int(time.time())
    session.execute(f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 4} WHERE {row_1}")
    session.execute(
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 5}"
        " WHERE region = 'eu' AND customer = 7 AND day = '2024-05-06' AND seq >= 10 AND seq < 20"
    )
    session.execute(
        f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 6}"
        " WHERE region = 'eu' AND customer = 7 AND day >= '2024-01-01' AND day < '2024-02-01'"
    )
    session.execute(f"DELETE FROM {ks}.orders USING TIMESTAMP {T0 + 7} WHERE region = 'us' AND customer = 1")
    session.execute(f"UPDATE {ks}.hits SET n = n + 3 WHERE id = 1")
    session.execute(
        f"INSERT INTO {ks}.orders (region, customer, day, seq, note) VALUES ('eu', 8, '-5000-01-01', 1, 'ancient')"
        f" USING TIMESTAMP {T0 + 9}"
    )
    session.execute(f"DELETE attrs FROM {ks}.orders USING TIMESTAMP {T0 + 10} WHERE {row_1}")

    batches = _read_all(_source(cassandra, ks, tmp_path))
    orders = _changes(batches, f"{ks}.orders")
    statics = _changes(batches, f"{ks}.orders_static")

    eu7 = {"region": "eu", "customer": 7}
    key_1 = {**eu7, "day": datetime.date(2024, 5, 6), "seq": 1}
    scalars_1 = ("amount", "note", "names", "shipped", "ref", "data", "ratio", "big")
    expected_orders = [
        RowChange(
            ChangeOp.INSERT,
            {
                **key_1,
                "amount": Decimal("12.50"),
                "note": "first",
                "tags": CollectionWrite("set", T0, (ElementWrite("a", None, T0 + 1), ElementWrite("b", None, T0 + 1))),
                "attrs": CollectionWrite("map", T0, (ElementWrite("k", 1, T0 + 1),)),
                # Integer map keys: [key, value] pairs, as JSON text.
                "names": '[[1,"one"],[2,"two"]]',
                "shipped": datetime.datetime(2023, 11, 14, 22, 13, 20, 123000),
                "ref": "5b6962dd-3f90-4c93-8f61-eabfa4a5e3b9",
                "data": b"\xca\xfe",
                "ratio": float("inf"),
                "big": Decimal("12345678901234567890"),
            },
            T0 + 1,
            "",
            SECONDS,
            CellChange({column: CellWrite(T0 + 1) for column in scalars_1}, liveness=CellWrite(T0 + 1)),
        ),
        RowChange(
            ChangeOp.UPDATE,
            {**key_1, "note": None, "attrs": CollectionWrite("map", None, (ElementWrite("j", 5, T0 + 2),))},
            T0 + 2,
            "",
            SECONDS,
            CellChange({"note": CellWrite(T0 + 2)}),
        ),
        None,  # the TTL insert: its expiry is checked below
        RowChange(ChangeOp.DELETE, key_1, T0 + 4, "", SECONDS, CellChange(row_deletion=T0 + 4)),
        RowChange(
            ChangeOp.DELETE,
            eu7,
            T0 + 5,
            "",
            SECONDS,
            CellChange(
                range_deletions=(
                    RangeDeletion(
                        ClusteringBound((datetime.date(2024, 5, 6), 10), True),
                        ClusteringBound((datetime.date(2024, 5, 6), 20), False),
                        T0 + 5,
                    ),
                )
            ),
        ),
        # day is DESC: the bounds come in clustering order, so the range starts at the later day.
        RowChange(
            ChangeOp.DELETE,
            eu7,
            T0 + 6,
            "",
            SECONDS,
            CellChange(
                range_deletions=(
                    RangeDeletion(
                        ClusteringBound((datetime.date(2024, 2, 1),), False),
                        ClusteringBound((datetime.date(2024, 1, 1),), True),
                        T0 + 6,
                    ),
                )
            ),
        ),
        RowChange(
            ChangeOp.DELETE,
            {"region": "us", "customer": 1},
            T0 + 7,
            "",
            SECONDS,
            CellChange(partition_deletion=T0 + 7),
        ),
        RowChange(
            ChangeOp.UPDATE, {**key_1, "attrs": CollectionWrite("map", T0 + 10)}, T0 + 10, "", SECONDS, CellChange()
        ),
    ]
    assert len(orders) == len(expected_orders)
    for index, (got, want) in enumerate(zip(orders, expected_orders, strict=True)):
        if want is not None:
            assert _without_position(got) == want, index

    ttl = orders[2]
    assert ttl.op == ChangeOp.INSERT and ttl.values["note"] == "ttl" and ttl.version == T0 + 3
    assert ttl.cells is not None and ttl.cells.liveness is not None
    expiry = ttl.cells.cells["note"].expires_at
    assert expiry is not None and before_ttl + 3600 - 1 <= expiry <= after_ttl + 3600 + 1
    assert ttl.cells.liveness.expires_at == expiry

    # Positions: commit-log positions, in write order.
    positions = [CommitLogPosition.parse(change.position) for change in orders]
    assert positions == sorted(positions)

    # The static column went to the companion table; the partition deletion went there too.
    assert [_without_position(change) for change in statics] == [
        RowChange(ChangeOp.UPDATE, {**eu7, "flag": "F"}, T0 + 1, "", SECONDS, CellChange({"flag": CellWrite(T0 + 1)})),
        RowChange(
            ChangeOp.DELETE, {"region": "us", "customer": 1}, T0 + 7, "", SECONDS, CellChange(partition_deletion=T0 + 7)
        ),
    ]

    rejections = [r for batch in batches for r in batch.rejections if r.table.startswith(f"{ks}.")]
    assert [(r.table, r.stage) for r in rejections] == [(f"{ks}.hits", "parse"), (f"{ks}.orders", "parse")]
    counter, ancient = rejections
    assert COUNTER_REASON in counter.error and counter.payload == {"id": 1}
    # Names the column and where the change sits, never the value.
    assert "'day'" in ancient.error and "segment" in ancient.error and "-5000" not in ancient.error
    assert ancient.payload == {"region": "eu", "customer": 8} and ancient.version == T0 + 9

    schema = batches[0].tables[f"{ks}.orders"].schema
    assert schema.key_columns == ("region", "customer", "day", "seq") and schema.partition_key_length == 2
    assert schema.column("day").descending and not schema.column("seq").descending
    assert (schema.column("tags").collection, schema.column("tags").data_type) == ("set", "json")
    assert (schema.column("big").data_type, schema.column("big").scale) == ("decimal", 0)
    assert schema.column("shipped").datetime_precision == 3
    assert "flag" not in schema.column_names
    assert _source(cassandra, ks, tmp_path).retention({}).as_metadata()["cdc_total_space"] == "64MiB"


def test_small_batches_resume_exactly_where_the_last_one_ended(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(f"CREATE TABLE {ks}.items (id int PRIMARY KEY, v text) WITH cdc = true")
    insert = session.prepare(f"INSERT INTO {ks}.items (id, v) VALUES (?, ?) USING TIMESTAMP ?")
    for row in range(40):
        session.execute(insert, (row, f"v{row}", T0 + row))
    source = _source(cassandra, ks, tmp_path)

    small = _read_all(source, max_rows=3)
    got = [change.values["id"] for change in _changes(small, f"{ks}.items")]
    assert got == list(range(40)), got  # each once, in write order
    assert len(small) > 40 // 3  # it really was read in many batches
    for before, after in zip(small, small[1:], strict=False):
        assert after.start == before.end
    # One big batch reads the same changes.
    whole = _changes(_read_all(source), f"{ks}.items")
    assert whole == _changes(small, f"{ks}.items")


def test_a_table_created_or_altered_while_running_is_picked_up(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(f"CREATE TABLE {ks}.first (id int PRIMARY KEY, v text) WITH cdc = true")
    session.execute(f"INSERT INTO {ks}.first (id, v) VALUES (1, 'a') USING TIMESTAMP {T0 + 1}")
    source = _source(cassandra, ks, tmp_path)
    first = _read_all(source)
    assert [c.values for c in _changes(first, f"{ks}.first")] == [{"id": 1, "v": "a"}]

    session.execute(f"CREATE TABLE {ks}.later (id int PRIMARY KEY, v text) WITH cdc = true")
    session.execute(f"INSERT INTO {ks}.later (id, v) VALUES (2, 'b') USING TIMESTAMP {T0 + 2}")
    session.execute(f"ALTER TABLE {ks}.first ADD extra int")
    session.execute(f"INSERT INTO {ks}.first (id, extra) VALUES (3, 33) USING TIMESTAMP {T0 + 3}")
    batch = source.read_batch({"sink": first[-1].end}, None, 10**6)
    assert [c.values for c in batch.tables[f"{ks}.later"].changes] == [{"id": 2, "v": "b"}]
    assert [c.values for c in batch.tables[f"{ks}.first"].changes] == [{"id": 3, "extra": 33}]
    assert [r for r in batch.rejections if r.table.startswith(ks)] == []


def _segment_ids(cassandra: LocalCassandra) -> set[int]:
    return {index.segment_id for index in cassandra.cdc_indexes()}


def test_release_deletes_only_segments_every_checkpoint_passed_and_unblocks_a_full_cdc_raw(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(f"CREATE TABLE {ks}.blobs (id int PRIMARY KEY, payload blob) WITH cdc = true")
    insert = session.prepare(f"INSERT INTO {ks}.blobs (id, payload) VALUES (?, ?)")
    payload = os.urandom(200 * 1024)
    source = _source(cassandra, ks, tmp_path)
    # 64 MiB of cdc_total_space holds about 320 of these; twice that bounds the loop.
    refused = None
    for row in range(640):
        try:
            session.execute(insert, (row, payload))
        except WriteFailure as error:
            refused = error
            break
    assert refused is not None, "cdc_raw never filled"
    completed = {i.segment_id for i in cassandra.cdc_indexes() if i.completed}
    assert len(completed) > 3
    end = source.high_water_mark()
    middle = sorted(completed)[len(completed) // 2]

    # A sink without a checkpoint needs everything: nothing goes.
    source.release({"ahead": Checkpoint(end), "new": None})
    assert completed <= _segment_ids(cassandra)
    # One sink behind: only the segments before its checkpoint go.
    source.release({"ahead": Checkpoint(end), "behind": Checkpoint(CommitLogPosition(middle, 0))})
    remaining = _segment_ids(cassandra)
    assert {s for s in completed if s < middle}.isdisjoint(remaining)
    assert {s for s in completed if s >= middle} <= remaining
    for segment in completed - remaining:
        assert not (cassandra.cdc_raw_dir / f"CommitLog-7-{segment}.log").exists()
    # Both past everything: every completed segment goes, and the node accepts CDC writes again
    # (it re-measures cdc_raw every cdc_free_space_check_interval).
    source.release({"ahead": Checkpoint(end), "behind": Checkpoint(end)})
    assert completed.isdisjoint(_segment_ids(cassandra))
    assert source.log_usage()["cdc_raw_bytes_used"] < 8 * 1024 * 1024

    def accepted() -> bool:
        try:
            session.execute(insert, (10_000, b"accepted again"))
            return True
        except WriteFailure:
            return False

    wait_until(accepted, 10, "CDC writes accepted after release", interval=0.1)


def test_a_checkpoint_in_a_deleted_segment_is_a_loud_error(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    source = _source(cassandra, cassandra_keyspace, tmp_path)
    oldest = min(_segment_ids(cassandra), default=10**12)
    lost = CommitLogPosition(oldest - 1, 500)
    with pytest.raises(RuntimeError, match=rf"segment {oldest - 1} is no longer in .*re-sync"):
        source.read_batch({"sink": Checkpoint(lost)}, None, 100)


def test_check_names_the_table_without_cdc_and_the_yaml_key(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    cassandra.session().execute(f"CREATE TABLE {ks}.plain (id int PRIMARY KEY)")
    with pytest.raises(
        CassandraSourceError, match=rf'{ks}\.plain .* has cdc = false.*ALTER TABLE "{ks}"\."plain" WITH cdc = true'
    ):
        _source(cassandra, ks, tmp_path, include=[f"{ks}.plain"]).check()
    with pytest.raises(CassandraSourceError, match=rf"{ks}\.missing, which does not exist"):
        _source(cassandra, ks, tmp_path, include=[f"{ks}.missing"]).check()
    _source(cassandra, ks, tmp_path).check()  # a glob selects only tables with cdc: fine

    config = CassandraSourceConfig(kind="cassandra", cassandra_yaml=str(tmp_path / "nowhere.yaml"))
    with pytest.raises(NodeConfigError, match=r"sources\.cass\.cassandra_yaml: .*nowhere\.yaml is not a file"):
        CassandraChangeSource("cass", CassandraSourceSettings("cass", ("127.0.0.1",), cassandra.port), config)


CASSANDRA_PIPELINE = """
sources:
  cass: {kind: cassandra, port: 9042, cassandra_yaml: /etc/cassandra/cassandra.yaml, tables: {include: ["shop.orders"]}}
sinks:
  warehouse: {kind: clickhouse, dsn: "chdb:///tmp/cdc"}
dlq: {dsn_env: DLQ_DSN}
"""


@pytest.mark.parametrize(
    ("change", "named_key", "expectation"),
    [
        (("cassandra_yaml: /etc/cassandra/cassandra.yaml, ", ""), "sources.cass.cassandra_yaml", "Field required"),
        (("port: 9042", "port: 0"), "sources.cass.port", "greater than or equal to 1"),
        (("port: 9042", "port: 9042, password_env: CASS_PW"), "sources.cass", "username_env is required"),
        (("port: 9042", "port: 9042, dsn_env: X"), "sources.cass.dsn_env", "Extra inputs are not permitted"),
    ],
)
def test_cassandra_config_errors_name_the_key(change: tuple[str, str], named_key: str, expectation: str) -> None:
    text = CASSANDRA_PIPELINE.replace(*change)
    assert text != CASSANDRA_PIPELINE
    with pytest.raises(PipelineConfigError) as error:
        parse_pipeline_config(text, source="pipeline.yaml")
    assert named_key in str(error.value) and expectation in str(error.value)


def test_definitions_have_a_commitlog_sensor_and_a_snapshot_for_cassandra() -> None:
    pipeline = parse_pipeline_config(CASSANDRA_PIPELINE)
    definitions = build_definitions(pipeline)
    assert definitions.get_sensor_def("cass_commitlog_sensor").name == "cass_commitlog_sensor"
    job_names = {job.name for job in definitions.jobs or []}
    assert "plan_snapshot_cass" in job_names
    repository = definitions.get_repository_def()
    snapshot = snapshot_asset_key("cass", "shop.orders")
    assert snapshot in repository.asset_graph.get_all_asset_keys()
    assert snapshot in repository.asset_graph.get(sink_table_asset_key("warehouse", "shop.orders")).parent_keys
    resource = definitions.resources["source_cass"]
    assert isinstance(resource, dg.ConfigurableResource)


def test_stop_at_bounds_the_batch_and_keys_and_counts_come_from_the_live_table(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(f"CREATE TABLE {ks}.pairs (a text, b int, v text, PRIMARY KEY (a, b)) WITH cdc = true")
    session.execute(f"INSERT INTO {ks}.pairs (a, b, v) VALUES ('x', 1, 'one') USING TIMESTAMP {T0 + 1}")
    source = _source(cassandra, ks, tmp_path)
    stop = source.high_water_mark()
    session.execute(f"INSERT INTO {ks}.pairs (a, b, v) VALUES ('y', 2, 'two') USING TIMESTAMP {T0 + 2}")

    bounded = source.read_batch({"sink": None}, stop, 10**6)
    assert [c.values["b"] for c in bounded.tables[f"{ks}.pairs"].changes] == [1]
    assert bounded.end.position == stop
    rest = source.read_batch({"sink": bounded.end}, None, 10**6)
    assert [c.values["b"] for c in rest.tables[f"{ks}.pairs"].changes] == [2]

    schema = source.table_schema(f"{ks}.pairs")
    assert schema is not None
    assert source.row_count(f"{ks}.pairs") == 2
    assert sorted(source.live_keys(schema)) == [("x", 1), ("y", 2)]


def test_mutations_of_a_dropped_table_become_rejections_without_their_bytes(
    cassandra: LocalCassandra, cassandra_keyspace: str, tmp_path: Path
) -> None:
    ks = cassandra_keyspace
    session = cassandra.session()
    session.execute(f"CREATE TABLE {ks}.gone (id int PRIMARY KEY, secret text) WITH cdc = true")
    table_id = str(
        session.execute(
            "SELECT id FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s", [ks, "gone"]
        ).one()[0]
    )
    session.execute(f"INSERT INTO {ks}.gone (id, secret) VALUES (1, 'top-secret-{ks}') USING TIMESTAMP {T0 + 1}")
    session.execute(f"DROP TABLE {ks}.gone")

    batches = _read_all(_source(cassandra, ks, tmp_path))
    rejected = [r for batch in batches for r in batch.rejections if r.table == f"table id {table_id}"]
    assert len(rejected) == 1
    (rejection,) = rejected
    segment, offset = rejection.position.split(":")[1:]
    assert "unknown_table" in rejection.error and f"segment {segment} offset {offset}" in rejection.error
    assert rejection.payload["raw_bytes"] > 0 and len(rejection.payload["raw_sha256"]) == 64
    assert "top-secret" not in repr(rejection)
