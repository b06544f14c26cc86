"""The initial load's reads from Cassandra: handoff position, token-range chunks, rows as cell writes.

Cassandra tables are cell tables in the sinks: a change is a set of cell writes, each with its write
time, merged newest-wins, idempotently and in any order (core/cells.py). So a row read with
`WRITETIME()` and `TTL()` of every cell is just more cell writes: where the snapshot and the stream
overlap, the sinks keep whichever write is newer, as the node did. The snapshot's own `_version`
plays no part; each row's version is its newest write time, as a streamed change's is.

What CQL cannot show, and what the reader does about it:
- A row's primary-key liveness (the INSERT's timestamp and TTL). Every row read gets a liveness no
  newer than its oldest cell (0 when all its columns are null), expiring with its last cell when
  every cell expires. That keeps a row whose columns are all null, and does not keep a TTL'd row
  past its cells. A row created only by UPDATE (no liveness at the node) thus gets one: if all its
  cells are deleted later, the sinks keep it with null columns while the node drops it.
- The element paths of a non-frozen list (timeuuids). A copy under made-up paths would be a second
  copy of each element the stream also brings (writes in the overlap), and would not be replaced by
  `l[i] = x` or `l = l - [x]`. So list columns are not loaded: each row holding one goes to the DLQ
  (the rest of the row loads); the stream keeps them current from the handoff on.
- Tombstones: only live data is read; a first load needs none.
Set elements, map keys and UDT field names are the paths the commit log carries too, with values in
the segment reader's JSON forms (cql_types.reader_json), so streamed element changes replace them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from cassandra.query import PreparedStatement

from cdc_pipeline.core.changes import ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.sources.cassandra.catalog import STATIC_SUFFIX, TableLayout, quote
from cdc_pipeline.sources.cassandra.change_source import CassandraChangeSource, CassandraSourceError
from cdc_pipeline.sources.cassandra.changes import COUNTER_REASON, NOT_REPLAYABLE, PARSE
from cdc_pipeline.sources.cassandra.cql_types import (
    UdtFields,
    driver_value_parser,
    parse_cql_type,
)
from cdc_pipeline.sources.cassandra.snapshot_rows import (
    ReadColumn,
    RowReader,
    list_rejections,
    non_key,
    position,
    row_change,
    static_change,
)
from cdc_pipeline.sources.snapshot_source import ChunkBounds, ChunkSlice, KeyRange

# The Murmur3 partitioner's tokens (the only partitioner this reader splits by).
MIN_TOKEN = -(2**63)
MAX_TOKEN = 2**63 - 1
_MURMUR3 = "org.apache.cassandra.dht.Murmur3Partitioner"


class CassandraSnapshotReader:
    def __init__(self, source: CassandraChangeSource) -> None:
        self._source = source
        self._settings = source.settings
        self._catalog = source.catalog

    def table_schema(self, table: str) -> TableSchema | None:
        schema = self._source.table_schema(table)
        if schema is None:
            # The driver's schema view may lag a table created a moment ago: once more, refreshed.
            self._catalog.refresh()
            schema = self._source.table_schema(table)
        return schema

    def handoff_checkpoint(self) -> Checkpoint:
        """The high-water mark of cdc_raw: what the node has made durable there so far.

        A mutation is appended to the commit log before it is applied and acknowledged, so every
        change before this position was applied by the time the chunks are read (after the plan);
        changes after it stream. Sinks without a checkpoint adopt this position, and segments
        before every sink's checkpoint may be released afterwards: the snapshot covers them.
        Nothing needs a version below the stream's: the sinks merge cells by write time.
        """
        return Checkpoint(self._source.high_water_mark())

    def key_range(self, schema: TableSchema) -> KeyRange | None:
        """The whole token ring (tokens spread evenly, whatever the keys); the rows are estimated.

        The estimate is the node's `system.size_estimates` (partitions of flushed SSTables, summed
        over its ranges; a wide partition counts once), or, when that has nothing yet (a new or
        unflushed table), an exact `count(*)`.
        """
        layout = self._layout(schema)
        session = self._settings.session()
        partitioner = session.cluster.metadata.partitioner
        if partitioner != _MURMUR3:
            return None  # tokens of other partitioners are not integers spread over this range
        table = self._table_name(layout)
        first = session.execute(f"SELECT {self._token(layout)} FROM {table} LIMIT 1").one()
        if first is None:
            return None
        estimates = session.execute(
            "SELECT partitions_count FROM system.size_estimates WHERE keyspace_name = %s AND table_name = %s",
            (layout.schema.database, layout.schema.name),
        )
        rows = sum(int(row.partitions_count or 0) for row in estimates)
        if rows <= 0:
            counted = session.execute(f"SELECT count(*) FROM {table}").one()
            rows = int(counted[0]) if counted is not None else 1
        return KeyRange(MIN_TOKEN, MAX_TOKEN, max(rows, 1), open_low=MIN_TOKEN, open_high=MAX_TOKEN)

    def read_chunk(
        self, schema: TableSchema, bounds: ChunkBounds, version: int, slice_rows: int
    ) -> Iterator[ChunkSlice]:
        """The chunk's rows as cell writes (`version` is unused: each row's is its newest write time),
        and the static rows of its partitions as changes of `<table>_static`."""
        layout = self._layout(schema)
        udts = self._catalog.udts(layout.schema.database)
        keys = list(layout.schema.key_columns)
        regular = [self._read_column(layout.schema.column(c), udts) for c in non_key(layout.schema)]
        static_schema = layout.static_schema
        static = [] if static_schema is None else [self._read_column(static_schema.column(c), udts)
                                                   for c in non_key(static_schema)]  # fmt: skip
        selectors = [quote(k) for k in keys] + [s for column in (*regular, *static) for s in column.selectors()]
        key_parsers = [driver_value_parser(layout.schema.column(k).column_type, udts) for k in keys]
        partition_width = len(layout.schema.partition_key)
        has_clustering = len(keys) > partition_width
        reader = RowReader(layout.schema.qualified_name, udts)
        last_partition: tuple[Any, ...] | None = None
        changes: list[RowChange] = []
        statics: list[RowChange] = []
        rejections: list[Rejection] = []
        read = 0
        # TTL() counts down from the node's clock: expiry = read time + TTL (to the second, as
        # the node's own expiry times are; clocks are assumed in sync, as write times already are).
        now = int(time.time())
        for row in self._select(layout, selectors, bounds, slice_rows):
            read += 1
            try:
                key = {k: None if v is None else parse(v) for k, parse, v in zip(keys, key_parsers, row, strict=False)}
            except ValueError as error:
                rejections.append(self._reject(layout.schema, {}, f"key: {error}"))
                continue
            partition = tuple(key[k] for k in keys[:partition_width])
            offset = len(keys)
            regular_values = row[offset : offset + sum(c.width for c in regular)]
            static_values = row[offset + sum(c.width for c in regular) :]
            if static_schema is not None and partition != last_partition:
                # Rows of a partition come together (token order): its static row once, with the first.
                partition_key = {k: key[k] for k in keys[:partition_width]}
                try:
                    read_static = reader.cells(static, static_values, now)
                except ValueError as error:
                    rejections.append(self._reject(static_schema, partition_key, str(error)))
                else:
                    if read_static.values:
                        statics.append(static_change(static_schema, partition_key, read_static))
                    rejections += list_rejections(static_schema, partition_key, read_static)
            last_partition = partition
            # A partition with static columns and no rows reads as one row with null clustering columns.
            if not (has_clustering and key[keys[-1]] is None):
                try:
                    read_row = reader.cells(regular, regular_values, now)
                except ValueError as error:
                    rejections.append(self._reject(layout.schema, key, str(error)))
                else:
                    changes.append(row_change(layout.schema, key, read_row))
                    rejections += list_rejections(layout.schema, key, read_row)
            if read >= slice_rows:
                yield _slice(changes, rejections, static_schema, statics)
                changes, statics, rejections, read = [], [], [], 0
                now = int(time.time())
        if read or changes or rejections:
            yield _slice(changes, rejections, static_schema, statics)

    def read_chunk_keys(
        self, schema: TableSchema, bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        layout = self._layout(schema)
        udts = self._catalog.udts(layout.schema.database)
        keys = list(layout.schema.key_columns)
        parsers = [driver_value_parser(layout.schema.column(k).column_type, udts) for k in keys]
        has_clustering = len(keys) > len(layout.schema.partition_key)
        found: list[tuple[Any, ...]] = []
        for row in self._select(layout, [quote(k) for k in keys], bounds, slice_rows):
            if has_clustering and row[-1] is None:
                continue  # a partition holding only static columns: no row
            found.append(tuple(parse(value) for parse, value in zip(parsers, row, strict=True)))
            if len(found) >= slice_rows:
                yield found
                found = []
        if found:
            yield found

    # -- helpers --------------------------------------------------------------------------------

    def _layout(self, schema: TableSchema) -> TableLayout:
        layout = self._catalog.layout(schema.database, schema.name)
        where = f"{self._settings.describe()}: table {schema.qualified_name}"
        if layout is None:
            if schema.name.endswith(STATIC_SUFFIX):
                raise CassandraSourceError(
                    f"{where} is a static-column companion: it is loaded with its table"
                    f" {schema.database}.{schema.name.removesuffix(STATIC_SUFFIX)}; load that one"
                )
            raise CassandraSourceError(f"{where} does not exist")
        if layout.is_counter_table:
            raise CassandraSourceError(f"{where} cannot be loaded: {COUNTER_REASON}")
        return layout

    @staticmethod
    def _table_name(layout: TableLayout) -> str:
        return f"{quote(layout.schema.database)}.{quote(layout.schema.name)}"

    @staticmethod
    def _token(layout: TableLayout) -> str:
        return f"token({', '.join(map(quote, layout.schema.partition_key))})"

    def _read_column(self, column: ColumnSchema, udts: UdtFields) -> ReadColumn:
        cql = parse_cql_type(column.column_type)
        if column.collection != "udt":
            return ReadColumn(column, cql)
        fields = udts.of(cql.name)
        if not fields:
            raise CassandraSourceError(
                f"{self._settings.describe()}: column {column.name!r} has type {cql.name!r}, which keyspace"
                " metadata does not describe (dropped or altered since?)"
            )
        return ReadColumn(column, cql, fields)

    def _select(
        self, layout: TableLayout, selectors: list[str], bounds: ChunkBounds, slice_rows: int
    ) -> Iterator[tuple[Any, ...]]:
        query = f"SELECT {', '.join(selectors)} FROM {self._table_name(layout)}"
        parameters: tuple[int, ...] = ()
        if bounds.low is not None and bounds.high is not None:
            token = self._token(layout)
            query += f" WHERE {token} >= ? AND {token} <= ?"
            parameters = (max(bounds.low, MIN_TOKEN), min(bounds.high, MAX_TOKEN))
        session = self._settings.pure_python_session()
        statement: PreparedStatement = session.prepare(query)
        statement.fetch_size = slice_rows  # the driver pages; rows are read as pages arrive
        yield from session.execute(statement, parameters)

    def _reject(self, schema: TableSchema, key: dict[str, Any], reason: str) -> Rejection:
        return Rejection(
            PARSE,
            schema.qualified_name,
            ChangeOp.INSERT,
            f"{schema.qualified_name} (initial load): {reason}",
            position(schema),
            0,
            dict(key),
            not_replayable=NOT_REPLAYABLE,
        )


def _slice(
    changes: list[RowChange], rejections: list[Rejection], static_schema: TableSchema | None, statics: list[RowChange]
) -> ChunkSlice:
    companions = [TableChanges(static_schema, statics)] if static_schema is not None and statics else []
    return ChunkSlice(changes, rejections, companions)
