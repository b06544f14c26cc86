"""Reads one micro-batch from a logical replication slot (pgoutput), cut only at transaction ends.

The slot is peeked, never consumed: the batch's end becomes the sinks' checkpoints, and the slot
is advanced to the earliest of them when the next batch starts. A batch reads up to a progress
mark it writes itself (see ReplicationSlot.mark_end_of_read) or about `max_rows` rows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from cdc_pipeline.core.changes import ChangeBatch, ChangeOp, Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind
from cdc_pipeline.sources.postgres.catalog import PostgresCatalog
from cdc_pipeline.sources.postgres.column_types import ValueNotDecodable, ValueParser, value_parser, why_unparseable
from cdc_pipeline.sources.postgres.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    LogicalMessage,
    PgOutputError,
    Relation,
    RowMessage,
    Truncate,
    TupleValue,
    decode_message,
)
from cdc_pipeline.sources.postgres.positions import LogSequenceNumber, check_wal_version_room, wal_row_version
from cdc_pipeline.sources.postgres.relation_shape import relation_shape
from cdc_pipeline.sources.postgres.replication_slot import ReplicationSlot

_MARK_PREFIX = "cdc_pipeline.read_mark"
_FETCH_ROWS = 5_000


class WalDecodeError(RuntimeError):
    """A message the reader must not skip cannot be decoded; the message names its LSN."""


@dataclass
class _RelationPlan:
    """How to turn a relation's row images into values: its schema, or why its rows go to the DLQ."""

    relation: Relation
    schema: TableSchema | None
    parsers: list[tuple[str, ValueParser | None]]
    problem: str | None


@dataclass
class _Transaction:
    commit_lsn: int
    commit_ts: int
    rows: int = 0
    tables: dict[str, TableChanges] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)


class WalBatchReader:
    def __init__(self, source_name: str, slot: ReplicationSlot, catalog: PostgresCatalog) -> None:
        self._source_name = source_name
        self._slot = slot
        self._catalog = catalog
        self._plans: dict[int, _RelationPlan] = {}

    def read(
        self, start: Checkpoint, max_rows: int, max_bytes: int | None = None, max_seconds: float | None = None
    ) -> ChangeBatch:
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        mark_token = uuid.uuid4().hex
        mark, flushed_after_mark = self._slot.mark_end_of_read(f"{_MARK_PREFIX}.{mark_token}")
        # The mark's record starts at `mark`: reading up to one byte past it includes the mark itself.
        past_mark = LogSequenceNumber(mark.value + 1)
        batch = ChangeBatch(source=self._source_name, start=start, end=start)
        transaction: _Transaction | None = None
        # pgoutput messages' sizes: what the batch's values weigh, before Python multiplies it.
        read_bytes = 0
        messages = self._messages(past_mark, max_rows)
        try:
            for lsn, message, size in messages:
                read_bytes += size
                if isinstance(message, Begin):
                    transaction = _Transaction(message.commit_lsn, int(message.commit_time.timestamp()))
                elif isinstance(message, Relation):
                    plan = self._plan(message)
                    if _changes_shape_of_rows_in(batch, plan):
                        # The batch already holds rows of the table in its older shape: it ends before
                        # this transaction, which the next batch starts with.
                        break
                    self._plans[message.oid] = plan
                    if transaction is not None and plan.schema is not None and plan.problem is None:
                        transaction.schema_changes.extend(self._added_with_defaults(plan, transaction))
                elif isinstance(message, RowMessage):
                    if transaction is None:
                        raise WalDecodeError(f"row change at {lsn} outside a transaction")
                    self._add_row(transaction, message, lsn)
                elif isinstance(message, Truncate):
                    if transaction is None:
                        raise WalDecodeError(f"TRUNCATE at {lsn} outside a transaction")
                    if any(self._qualified(oid) in batch.tables for oid in message.relation_oids):
                        # Rows of the table already in the batch are older than the TRUNCATE, which the
                        # sinks apply before the batch's rows: the batch ends before this transaction.
                        break
                    self._add_truncate(transaction, message, lsn)
                elif isinstance(message, Commit):
                    if transaction is None or transaction.commit_lsn != message.commit_lsn:
                        raise WalDecodeError(f"commit at {lsn} does not close the transaction that began before it")
                    check_wal_version_room(message.commit_lsn, message.end_lsn, transaction.rows)
                    _merge(batch, transaction)
                    batch.end = Checkpoint(LogSequenceNumber(message.end_lsn))
                    batch.last_commit_ts = transaction.commit_ts
                    transaction = None
                    if (max_bytes is not None and read_bytes >= max_bytes) or (
                        deadline is not None and time.monotonic() >= deadline
                    ):
                        # The next batch starts with the next transaction; the slot's peek stops at
                        # about max_rows on its own.
                        break
                elif isinstance(message, LogicalMessage) and message.prefix == f"{_MARK_PREFIX}.{mark_token}":
                    # Every transaction that committed before the mark has been read, and any later one
                    # commits after it: the batch ends past the mark even if nothing here was published.
                    if not isinstance(batch.end.position, LogSequenceNumber) or batch.end.position < past_mark:
                        batch.end = Checkpoint(past_mark)
                    # The mark itself moved the WAL: the sensor must not take it for news.
                    batch.log_read_to = flushed_after_mark
        finally:
            # Ends the decoding transaction on the kept connection, however the loop ended.
            messages.close()
        # A transaction whose commit was not read stays out: the next batch reads it again.
        return batch

    def _messages(self, upto: LogSequenceNumber, max_rows: int) -> Generator[tuple[str, Any, int], None, None]:
        # A server-side cursor keeps the client's memory to one fetch, whatever the batch size.
        with self._slot.connection.transaction_cursor("cdc_wal_batch") as cursor:
            cursor.itersize = _FETCH_ROWS
            cursor.execute(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s,"
                " 'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
                (self._slot.name, str(upto), max_rows, self._slot.publication),
            )
            for lsn, data in cursor:
                try:
                    yield lsn, decode_message(bytes(data)), len(data)
                except (PgOutputError, IndexError, ValueError) as error:
                    raise WalDecodeError(f"cannot decode the pgoutput message at {lsn}: {error}") from error

    def _plan(self, relation: Relation) -> _RelationPlan:
        schema_name, table = relation.namespace, relation.name
        if not self._catalog.selects(schema_name, table):
            return _RelationPlan(relation, None, [], None)
        self._catalog.forget(schema_name, table)  # a relation message follows any change of its shape
        catalog = self._catalog.table(schema_name, table)
        columns = [column.name for column in relation.columns]
        qualified = relation.qualified_name
        try:
            # The rows' own shape (relation_shape.py): rows written before an ALTER keep theirs.
            schema = relation_shape(
                relation, catalog, self._catalog.type_of, self._catalog.key_override(schema_name, table)
            )
        except ValueError as error:
            problem = f"table {qualified}: {error}"
            return _RelationPlan(relation, catalog, [(name, None) for name in columns], problem)
        if not schema.key_columns:
            problem = (
                f"table {qualified} has no primary key or replica identity index: set"
                f" sources.<name>.key_columns['{qualified}'] to the columns that identify a row"
            )
            return _RelationPlan(relation, schema, [(name, None) for name in columns], problem)
        return _RelationPlan(relation, schema, [(c.name, value_parser(c)) for c in schema.columns], None)

    def _qualified(self, relation_oid: int) -> str | None:
        plan = self._plans.get(relation_oid)
        return plan.relation.qualified_name if plan is not None else None

    def _added_with_defaults(self, plan: _RelationPlan, transaction: _Transaction) -> list[SchemaChange]:
        """Columns the rows that existed read a default for (ADD COLUMN ... DEFAULT): the sinks give
        those rows the same value. A sink that has the column already does nothing."""
        relation = plan.relation
        missing = self._catalog.missing_values(relation.namespace, relation.name)
        names = {column.name for column in relation.columns}
        version = wal_row_version(transaction.commit_lsn, transaction.rows)
        return [
            SchemaChange(
                relation.qualified_name,
                SchemaChangeKind.ADD_COLUMN,
                str(LogSequenceNumber(transaction.commit_lsn)),
                version,
                f"relation {relation.qualified_name}: column {column} reads a default in the rows that existed",
                column=column,
                default=value,
                has_default=value is not None,
            )
            for column, value in missing.items()
            if column in names
        ]

    def _add_row(self, transaction: _Transaction, message: RowMessage, lsn: str) -> None:
        plan = self._plans.get(message.relation_oid)
        if plan is None:
            raise WalDecodeError(f"row change at {lsn} for relation {message.relation_oid} before its description")
        if plan.schema is None and plan.problem is None:
            return  # published, but not selected by this source's tables
        qualified = plan.relation.qualified_name
        version = wal_row_version(transaction.commit_lsn, transaction.rows)
        transaction.rows += 1
        position = f"{lsn}"
        images = self._images(plan, message)
        if plan.problem is not None or plan.schema is None:
            for op, raw in images:
                payload = _raw_payload(plan, raw)
                transaction.rejections.append(
                    Rejection("parse", qualified, op, plan.problem or "", position, version, payload)
                )
            return
        changes = transaction.tables.setdefault(qualified, TableChanges(plan.schema)).changes
        for op, raw in images:
            try:
                values = _values(plan, raw, message)
            except ValueNotDecodable as error:
                payload = _raw_payload(plan, raw)
                transaction.rejections.append(Rejection("parse", qualified, op, str(error), position, version, payload))
                continue
            changes.append(RowChange(op, values, version, position, transaction.commit_ts))

    def _images(self, plan: _RelationPlan, message: RowMessage) -> list[tuple[ChangeOp, list[TupleValue]]]:
        if message.op is ChangeOp.DELETE:
            assert message.old is not None
            return [(ChangeOp.DELETE, message.old)]
        assert message.new is not None
        if message.op is ChangeOp.UPDATE and message.old is not None and plan.schema is not None:
            keys = [i for i, (name, _) in enumerate(plan.parsers) if name in plan.schema.key_columns]
            if any(message.old[i] != message.new[i] for i in keys):
                # The row moved to another key: the old key must disappear from the sinks.
                return [(ChangeOp.DELETE, message.old), (ChangeOp.INSERT, message.new)]
        return [(message.op, message.new)]

    def _add_truncate(self, transaction: _Transaction, message: Truncate, lsn: str) -> None:
        for oid in message.relation_oids:
            plan = self._plans.get(oid)
            if plan is None or (plan.schema is None and plan.problem is None):
                continue
            qualified = plan.relation.qualified_name
            # The sinks mark every row older than the TRUNCATE deleted; rows this transaction wrote
            # before it are gone at the source too.
            transaction.tables.pop(qualified, None)
            transaction.schema_changes.append(
                SchemaChange(
                    qualified,
                    SchemaChangeKind.TRUNCATE,
                    lsn,
                    wal_row_version(transaction.commit_lsn, transaction.rows),
                    f"TRUNCATE {qualified}",
                )
            )
            transaction.rows += 1


def _raw_payload(plan: _RelationPlan, raw: list[TupleValue]) -> dict[str, Any]:
    """The change as the source sent it (text values), for the DLQ; the mask step masks it."""
    return {
        name: "<unchanged TOAST value: not in the change>" if value is UNCHANGED_TOAST else value
        for (name, _), value in zip(plan.parsers, raw, strict=True)
    }


def _values(plan: _RelationPlan, raw: list[TupleValue], message: RowMessage) -> dict[str, Any]:
    if not message.unchanged_toast:
        try:
            # The common case in one comprehension; any failure is re-done below to name the column.
            return {
                name: value if parse is None or value is None else parse(value)  # type: ignore[arg-type]
                for (name, parse), value in zip(plan.parsers, raw, strict=True)
            }
        except ValueError:
            pass
    values: dict[str, Any] = {}
    for index, ((name, parse), value) in enumerate(zip(plan.parsers, raw, strict=True)):
        if value is UNCHANGED_TOAST:
            value = _unchanged_value(plan, message, index, name)
        if value is None or isinstance(value, str) and parse is None:
            values[name] = value
            continue
        assert isinstance(value, str)
        try:
            values[name] = parse(value) if parse is not None else value
        except ValueError:
            reason = why_unparseable(value, plan.schema.column(name)) if plan.schema else "unparseable"
            raise ValueNotDecodable(f"column {name}: {reason}") from None
    return values


def _unchanged_value(plan: _RelationPlan, message: RowMessage, index: int, name: str) -> TupleValue:
    """An UPDATE left a large (TOASTed) value out; REPLICA IDENTITY FULL's old image still has it."""
    old = message.old[index] if message.old is not None and message.old_is_full_row else UNCHANGED_TOAST
    if old is UNCHANGED_TOAST:
        raise ValueNotDecodable(
            f"column {name}: the UPDATE did not carry this large (TOASTed) unchanged value; set"
            f" ALTER TABLE {plan.relation.qualified_name} REPLICA IDENTITY FULL so changes carry it"
        )
    return old


def _changes_shape_of_rows_in(batch: ChangeBatch, plan: _RelationPlan) -> bool:
    held = batch.tables.get(plan.relation.qualified_name)
    return held is not None and plan.schema is not None and held.schema.columns != plan.schema.columns


def _merge(batch: ChangeBatch, transaction: _Transaction) -> None:
    for qualified, pending in transaction.tables.items():
        existing = batch.tables.get(qualified)
        if existing is None:
            batch.tables[qualified] = pending
        else:
            existing.changes.extend(pending.changes)
    batch.rejections.extend(transaction.rejections)
    batch.schema_changes.extend(transaction.schema_changes)
