"""The benchmark's measurements, each run in a process of its own by `python -m cdc_pipeline.bench`.

In an importable module (not __main__) so that worker processes can be spawned with them.
"""

from __future__ import annotations

from cdc_pipeline.config.models import MaskingConfig
from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition, as_binlog_position

DATABASE = "bench"


def measure_reference(settings: MySqlConnectionSettings, start: BinlogPosition, end: BinlogPosition) -> int:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    stream = BinLogStreamReader(
        connection_settings=settings.as_pymysql_kwargs(),
        server_id=9001,
        resume_stream=True,
        log_file=start.file,
        log_pos=start.pos,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )
    rows = 0
    for event in stream:
        rows += len(event.rows)
        if BinlogPosition(stream.log_file, stream.log_pos) >= end:
            break
    stream.close()
    return rows


def measure_pipeline(
    phase: str,
    settings: MySqlConnectionSettings,
    start: BinlogPosition,
    end: BinlogPosition,
    batch_rows: int,
    sink_target: str,
) -> int:
    from cdc_pipeline.mapping.mapper import TypeMapper
    from cdc_pipeline.masking.masker import Masker
    from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
    from cdc_pipeline.sinks.postgres.sink import PostgresSink
    from cdc_pipeline.sinks.registry import sink_kind
    from cdc_pipeline.sources.mysql.binlog_reader import BinlogBatchReader
    from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
    from cdc_pipeline.sources.mysql.connection import ControlConnection

    catalog = MySqlCatalog(settings, TableSelection(include=[f"{DATABASE}.*"]))
    reader = BinlogBatchReader("bench", ControlConnection(settings), 9002, catalog)
    masker = Masker(MaskingConfig(), "bench-key")
    sink: ClickHouseSink | PostgresSink | None = None
    mapper: TypeMapper | None = None
    if phase == "clickhouse":
        sink = ClickHouseSink("warehouse", sink_target, "bench")
        mapper = TypeMapper(sink.name, sink_kind("clickhouse").map_column, [])
    elif phase == "postgres":
        sink = PostgresSink("analytics", sink_target, "bench")
        mapper = TypeMapper(sink.name, sink_kind("postgres").map_column, [])
    position, rows = start, 0
    while position < end:
        # One batch alive at a time, as in the job (one batch per run).
        batch = reader.read(Checkpoint(position), max_rows=batch_rows, stop_at=end)
        if batch.end.position == position:
            break
        rows += batch.row_count
        position = as_binlog_position(batch.end.position)
        if mapper is not None and sink is not None:
            mapped = mapper.map_batch(masker.mask_batch(batch))
            sink.write(mapped, lambda rejections: None)
            del mapped
        del batch
    reader.close()
    return rows


def load_chunks(phase: str, port: int, sink_target: str, partition_keys: list[str]) -> int:
    """One backfill worker: load the given chunks into a sink of its own (as one run per chunk would)."""
    from cdc_pipeline.config.loading import parse_pipeline_config
    from cdc_pipeline.masking.masker import Masker
    from cdc_pipeline.sinks.base import Sink
    from cdc_pipeline.sinks.clickhouse.sink import ClickHouseSink
    from cdc_pipeline.sinks.postgres.sink import PostgresSink
    from cdc_pipeline.snapshot.chunks import Chunk
    from cdc_pipeline.snapshot.loader import load_chunk
    from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
    from cdc_pipeline.sources.mysql.snapshot_reader import MySqlSnapshotReader

    settings = MySqlConnectionSettings("127.0.0.1", port, "root", "")
    kind = "clickhouse" if phase == "snapshot_clickhouse" else "postgres"
    pipeline = parse_pipeline_config(
        f"sources: {{bench: {{}}}}\nsinks: {{target: {{kind: {kind}, dsn_env: UNUSED}}}}\ndlq: {{dsn_env: UNUSED}}"
    )
    sink: Sink = (
        ClickHouseSink("target", sink_target, "bench")
        if kind == "clickhouse"
        else PostgresSink("target", sink_target, "bench")
    )
    catalog = MySqlCatalog(settings, TableSelection(include=[f"{DATABASE}.*"]))
    schema = catalog.table(DATABASE, "orders")
    assert schema is not None
    source = MySqlSnapshotReader(settings, catalog, "position")
    masker = Masker(MaskingConfig(), "bench-key")
    rows = 0
    for key in partition_keys:
        chunk = Chunk.parse(key)
        rows += load_chunk("bench", source, schema, chunk, pipeline, masker, {"target": sink}, len, print).rows_read
    return rows


def measure_snapshot(
    phase: str, settings: MySqlConnectionSettings, sink_target: str, chunk_rows: int, parallel: int
) -> int:
    """The initial load of the whole table, its chunks spread over `parallel` worker processes (the
    backfill's concurrent runs). chdb serves one process per path, so ClickHouse loads one at a time."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from cdc_pipeline.snapshot.chunks import plan_chunks
    from cdc_pipeline.snapshot.handoff import snapshot_version
    from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
    from cdc_pipeline.sources.mysql.snapshot_reader import MySqlSnapshotReader

    catalog = MySqlCatalog(settings, TableSelection(include=[f"{DATABASE}.*"]))
    schema = catalog.table(DATABASE, "orders")
    assert schema is not None
    source = MySqlSnapshotReader(settings, catalog, "position")
    chunks = plan_chunks(source, schema, chunk_rows, snapshot_version(source.handoff_checkpoint()))
    workers = 1 if phase == "snapshot_clickhouse" else max(1, parallel)
    shares = [[c.partition_key for c in chunks[i::workers]] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        loads = [pool.submit(load_chunks, phase, settings.port, sink_target, share) for share in shares if share]
        return sum(load.result() for load in loads)
