"""The segment reader's JSON lines -> cell-level RowChanges (core/cells.py) or parse-stage Rejections.

A change line is one partition update. It becomes:
- a partition-level change (values = the partition key) for a partition deletion and/or range
  deletions; a partition deletion also goes to the `<table>_static` companion, whose rows it removes;
- a row-level change per row (values = every key column and the written columns);
- a change of `<table>_static` for the static row.
Raw bytes the reader attaches to errors never enter a payload: they are unmasked user data, so the
DLQ gets their length and sha256 only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cdc_pipeline.core.cells import (
    CellChange,
    CellWrite,
    ClusteringBound,
    CollectionWrite,
    ElementWrite,
    RangeDeletion,
)
from cdc_pipeline.core.changes import ChangeOp, Rejection, RowChange
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.sources.cassandra.catalog import TableLayout
from cdc_pipeline.sources.cassandra.cql_types import ValueParser, element_path

PARSE = "parse"
_ABSENT = object()
# Every Cassandra change the pipeline cannot read becomes a letter without cell writes.
NOT_REPLAYABLE = (
    "a Cassandra change the pipeline could not read holds no cell writes to replay (a counter's shard total,"
    " an undecodable mutation's digest, a list column the initial load leaves to the stream); the table's"
    " later changes replicate as usual"
)
COUNTER_REASON = (
    "counter columns carry each node's shard total, not a mergeable value; counter tables are not replicated"
)


@dataclass
class DecodedChanges:
    """What one change line became: changes per schema, and rejections."""

    changes: list[tuple[TableSchema, RowChange]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def raw_digest(raw_hex: str | None) -> dict[str, Any]:
    """Length and sha256 of raw bytes the reader printed as hex: identifies them without holding them."""
    raw = bytes.fromhex(raw_hex) if raw_hex else b""
    return {"raw_bytes": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest()}


def position_of(line: dict[str, Any]) -> str:
    # Formatted here, as CommitLogPosition prints it, without building one: once per change line.
    return f"cdc:{int(line['segment_id'])}:{int(line['position'])}"


def error_line_rejection(line: dict[str, Any], table: str) -> Rejection:
    """A reader error line (unknown_table, undecodable_mutation, undecodable_update) as a DLQ entry."""
    where = f"segment {line['segment_id']} offset {line['position']}"
    payload = {"reason": line.get("reason"), "table_id": line.get("table_id"), **raw_digest(line.get("raw_hex"))}
    return Rejection(
        PARSE,
        table,
        ChangeOp.UPDATE,
        f"{table}: {line.get('reason')} at {where}: {line.get('error', '')}",
        position_of(line),
        0,
        payload,
        not_replayable=NOT_REPLAYABLE,
    )


def _expiry(entry: dict[str, Any]) -> int | None:
    value = entry.get("local_expiration_time")
    return int(value) if value is not None else None


class ChangeDecoder:
    """Decodes the change lines of one table, whose layout comes from the catalog."""

    def __init__(self, layout: TableLayout) -> None:
        self._layout = layout
        self._schema = layout.schema
        # Looked up once: decode() runs for every change line.
        self._partition_key = layout.schema.partition_key
        self._clustering_columns = layout.schema.clustering_columns

    def decode(self, line: dict[str, Any]) -> DecodedChanges:
        result = DecodedChanges()
        position = position_of(line)
        try:
            partition_key = self._key(self._partition_key, line["partition_key"])
        except ValueError as error:
            result.rejections.append(self._reject(line, position, {}, str(error)))
            return result
        if "errors" in line:
            result.rejections.append(self._reject(line, position, partition_key, self._describe_errors(line)))
            return result
        if self._layout.is_counter_table:
            result.rejections.append(self._reject(line, position, partition_key, COUNTER_REASON))
            return result
        changes = result.changes
        try:
            if "partition_deletion" in line or "range_tombstones" in line:
                changes += self._partition_level(line, position, partition_key)
            static_row = line.get("static_row")
            if static_row is not None and self._layout.static_schema is not None:
                changes.append(
                    (
                        self._layout.static_schema,
                        self._row(static_row, position, partition_key, self._layout.static_schema),
                    )
                )
            schema, clustering_columns = self._schema, self._clustering_columns
            for row in line.get("rows", ()):
                clustering = row.get("clustering")
                key = {**partition_key, **self._key(clustering_columns, clustering)} if clustering else partition_key
                changes.append((schema, self._row(row, position, key, schema)))
        except ValueError as error:
            return DecodedChanges(rejections=[self._reject(line, position, partition_key, str(error))])
        return result

    def _reject(self, line: dict[str, Any], position: str, key: dict[str, Any], reason: str) -> Rejection:
        table = self._schema.qualified_name
        return Rejection(
            PARSE,
            table,
            ChangeOp.UPDATE,
            f"{table} at segment {line['segment_id']} offset {line['position']}: {reason}",
            position,
            max(_timestamps(line), default=0),
            dict(key),
            not_replayable=NOT_REPLAYABLE,
        )

    def _describe_errors(self, line: dict[str, Any]) -> str:
        parts = [f"{error.get('at')}: {error.get('error')} ({raw_digest(error.get('raw_hex'))['raw_bytes']} bytes)"
                 for error in line["errors"]]  # fmt: skip
        return "undecodable value(s): " + "; ".join(parts)

    def _parse(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        parser = self._layout.parsers.get(column)
        try:
            return parser(value)  # type: ignore[misc]  # None: the column is not known (below)
        except (ValueError, TypeError, ArithmeticError) as error:
            raise self._unparsable(column, parser, error) from None

    def _unparsable(self, column: str, parser: ValueParser | None, error: Exception) -> ValueError:
        if parser is None:
            return ValueError(f"column {column!r} is not in the table's schema (altered since?)")
        # The message names the column and the problem, never the value (run logs are not masked).
        return ValueError(f"column {column!r}: {type(error).__name__}: {without_value(error)}")

    def _key(self, columns: Iterable[str], given: dict[str, Any]) -> dict[str, Any]:
        return {column: self._parse(column, given[column]) for column in columns if column in given}

    def _partition_level(
        self, line: dict[str, Any], position: str, partition_key: dict[str, Any]
    ) -> list[tuple[TableSchema, RowChange]]:
        deletion = line.get("partition_deletion")
        tombstones = line.get("range_tombstones", [])
        if deletion is None and not tombstones:
            return []
        ranges = tuple(
            RangeDeletion(self._bound(t["start"]), self._bound(t["end"]), int(t["timestamp"])) for t in tombstones
        )
        partition_deletion = int(deletion["timestamp"]) if deletion is not None else None
        version = max([r.timestamp for r in ranges] + [partition_deletion or 0])
        change = RowChange(
            ChangeOp.DELETE,
            dict(partition_key),
            version,
            position,
            version // 1_000_000,
            CellChange(partition_deletion=partition_deletion, range_deletions=ranges),
        )
        changes = [(self._schema, change)]
        if partition_deletion is not None and self._layout.static_schema is not None:
            static_change = RowChange(
                ChangeOp.DELETE,
                dict(partition_key),
                partition_deletion,
                position,
                partition_deletion // 1_000_000,
                CellChange(partition_deletion=partition_deletion),
            )
            changes.append((self._layout.static_schema, static_change))
        return changes

    def _bound(self, bound: dict[str, Any]) -> ClusteringBound:
        # The reader gives the prefix as {column: value}; key order is the table's clustering order.
        given = bound["clustering"]
        values = tuple(self._parse(c, given[c]) for c in self._schema.clustering_columns if c in given)
        return ClusteringBound(values, bool(bound["inclusive"]))

    def _row(self, row: dict[str, Any], position: str, key: dict[str, Any], schema: TableSchema) -> RowChange:
        # The hot loop of capture (every cell of every change): the values the reader writes are read
        # once each, and the newest write time is kept as it goes.
        values: dict[str, Any] = dict(key)
        cells: dict[str, CellWrite] = {}
        parsers = self._layout.parsers
        version = 0
        for cell in row.get("cells", ()):
            column = cell["column"]
            # A live scalar cell has "value" (a JSON null only when undecodable, which never gets
            # here: such a line is rejected whole); a tombstone and a collection have none.
            value = cell.get("value", _ABSENT)
            if value is _ABSENT:
                if "collection" in cell:
                    write, latest = self._collection(cell)
                    values[column] = write
                    if latest > version:
                        version = latest
                    continue
                timestamp: int = cell["timestamp"]
                if timestamp > version:
                    version = timestamp
                cells[column] = CellWrite(
                    timestamp, None if cell.get("tombstone") else cell.get("local_expiration_time")
                )
                values[column] = None
                continue
            timestamp = cell["timestamp"]
            if timestamp > version:
                version = timestamp
            cells[column] = CellWrite(timestamp, cell.get("local_expiration_time"))
            if value is None:
                values[column] = None
                continue
            parser = parsers.get(column)
            try:
                values[column] = parser(value)  # type: ignore[misc]  # None: not known (_unparsable)
            except (ValueError, TypeError, ArithmeticError) as error:
                raise self._unparsable(column, parser, error) from None
        liveness_entry = row.get("liveness")
        liveness = None
        if liveness_entry is not None:
            liveness = CellWrite(liveness_entry["timestamp"], liveness_entry.get("local_expiration_time"))
            version = max(version, liveness.timestamp)
        deletion = row.get("deletion")
        row_deletion: int | None = deletion["timestamp"] if deletion else None
        if row_deletion is not None:
            version = max(version, row_deletion)
        if liveness is not None:
            op = ChangeOp.INSERT
        elif row_deletion is not None and len(values) == len(key):
            op = ChangeOp.DELETE  # deleted, and wrote nothing
        else:
            op = ChangeOp.UPDATE
        return RowChange(op, values, version, position, version // 1_000_000, CellChange(cells, liveness, row_deletion))

    def _collection(self, cell: dict[str, Any]) -> tuple[CollectionWrite, int]:
        """The write, and its newest timestamp (its elements' and its deletion's)."""
        deletion = cell.get("deletion")
        deleted_at = int(deletion["timestamp"]) if deletion else None
        latest = deleted_at or 0
        elements = []
        for element in cell.get("elements", ()):
            path = element.get("path")
            if path.__class__ is list or path.__class__ is dict:
                path = element_path(path)
            timestamp = int(element["timestamp"])
            if timestamp > latest:
                latest = timestamp
            if element.get("tombstone"):
                elements.append(ElementWrite(path, None, timestamp, None, True))
            else:
                elements.append(ElementWrite(path, element.get("value"), timestamp, _expiry(element)))
        return CollectionWrite(cell["collection"], deleted_at, tuple(elements)), latest


def without_value(error: Exception) -> str:
    # Our own parsers raise value-free messages; others (fromhex, Decimal) may quote the input.
    message = str(error)
    return message if "range" in message else "the value does not parse as the column's type"


def _timestamps(line: dict[str, Any]) -> list[int]:
    stamps: list[int] = []
    if line.get("partition_deletion"):
        stamps.append(int(line["partition_deletion"]["timestamp"]))
    stamps += [int(t["timestamp"]) for t in line.get("range_tombstones", [])]
    rows = list(line.get("rows", [])) + ([line["static_row"]] if line.get("static_row") else [])
    for row in rows:
        if row.get("liveness"):
            stamps.append(int(row["liveness"]["timestamp"]))
        if row.get("deletion"):
            stamps.append(int(row["deletion"]["timestamp"]))
        for cell in row.get("cells", []):
            if "timestamp" in cell:
                stamps.append(int(cell["timestamp"]))
            stamps += [int(e["timestamp"]) for e in cell.get("elements", [])]
            if cell.get("deletion"):
                stamps.append(int(cell["deletion"]["timestamp"]))
    return stamps
