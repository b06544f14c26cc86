"""Decodes pgoutput's logical replication messages (protocol version 1) into plain objects.

The message layouts are PostgreSQL's documented "Logical Replication Message Formats". Column
values arrive in PostgreSQL's text output format; `text_values` turns them into Python values.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final

from cdc_pipeline.core.changes import ChangeOp
from cdc_pipeline.core.schema import qualify


class PgOutputError(ValueError):
    """A message this decoder does not understand; the caller names its WAL position."""


class _UnchangedToast:
    """A TOASTed value an UPDATE did not change: pgoutput leaves it out of the new row image."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _UnchangedToast()
# One column of a row image: None (SQL NULL), UNCHANGED_TOAST, or the value in text format.
TupleValue = str | None | _UnchangedToast

_POSTGRES_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")


@dataclass(frozen=True, slots=True)
class Begin:
    commit_lsn: int
    commit_time: dt.datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # where the next transaction's records may start
    commit_time: dt.datetime


@dataclass(frozen=True, slots=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    in_replica_identity: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault) / n(othing) / f(ull) / i(ndex)
    columns: tuple[RelationColumn, ...]

    @property
    def qualified_name(self) -> str:
        return qualify(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class RowMessage:
    op: ChangeOp
    relation_oid: int
    new: list[TupleValue] | None  # insert, update
    old: list[TupleValue] | None  # delete; update when the key changed or REPLICA IDENTITY FULL
    old_is_full_row: bool  # 'O' (every column) rather than 'K' (identity columns only, others NULL)
    unchanged_toast: bool = False  # some image holds UNCHANGED_TOAST


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """A message written with pg_logical_emit_message (the reader's own progress marks)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """Origin and type messages: nothing the sinks need."""

    kind: str


Message = Begin | Commit | Relation | RowMessage | Truncate | LogicalMessage | Ignored


def _timestamp(microseconds: int) -> dt.datetime:
    return _POSTGRES_EPOCH + dt.timedelta(microseconds=microseconds)


class _Cursor:
    __slots__ = ("data", "at", "unchanged_toast")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 1  # after the message type byte
        self.unchanged_toast = False  # whether a tuple read so far left a TOASTed value out

    def int8(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def int16(self) -> int:
        (value,) = _INT16.unpack_from(self.data, self.at)
        self.at += 2
        return int(value)

    def int32(self) -> int:
        (value,) = _INT32.unpack_from(self.data, self.at)
        self.at += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = _UINT32.unpack_from(self.data, self.at)
        self.at += 4
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\x00", self.at)
        value = self.data[self.at : end].decode()
        self.at = end + 1
        return value

    def tuple_data(self) -> list[TupleValue]:
        # The hot loop of the WAL reader: locals only, one pass, no per-column method calls.
        data, at = self.data, self.at
        (count,) = _INT16.unpack_from(data, at)
        at += 2
        values: list[TupleValue] = [None] * count
        unpack_length = _INT32.unpack_from
        for index in range(count):
            kind = data[at]
            at += 1
            if kind == 0x74:  # 't': text
                end = at + 4 + unpack_length(data, at)[0]
                values[index] = data[at + 4 : end].decode()
                at = end
            elif kind == 0x75:  # 'u': unchanged TOAST
                values[index] = UNCHANGED_TOAST
                self.unchanged_toast = True
            elif kind != 0x6E:  # 'n' (null) is already None
                raise PgOutputError(f"tuple column kind {chr(kind)!r} (binary mode is not used by this reader)")
        self.at = at
        return values


def decode_message(data: bytes) -> Message:
    if not data:
        raise PgOutputError("empty message")
    kind = chr(data[0])
    cursor = _Cursor(data)
    if kind == "B":
        commit_lsn, micros, xid = _BEGIN.unpack_from(data, 1)
        return Begin(commit_lsn, _timestamp(micros), xid)
    if kind == "C":
        _, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, _timestamp(micros))
    if kind in "IUD":
        return _row_message(kind, cursor)
    if kind == "R":
        oid = cursor.uint32()
        namespace = cursor.string() or "pg_catalog"  # pgoutput sends '' for pg_catalog
        name = cursor.string()
        identity = chr(cursor.int8())
        columns = []
        for _ in range(cursor.int16()):
            flags = cursor.int8()
            column_name = cursor.string()
            type_oid = cursor.uint32()
            columns.append(RelationColumn(column_name, type_oid, cursor.int32(), bool(flags & 1)))
        return Relation(oid, namespace, name, identity, tuple(columns))
    if kind == "T":
        count = cursor.int32()
        cursor.int8()  # options: CASCADE / RESTART IDENTITY, nothing the sinks act on differently
        return Truncate(tuple(cursor.uint32() for _ in range(count)))
    if kind == "M":
        transactional = bool(cursor.int8())
        (lsn,) = struct.unpack_from("!Q", data, cursor.at)
        cursor.at += 8
        prefix = cursor.string()
        length = cursor.int32()
        return LogicalMessage(transactional, lsn, prefix, data[cursor.at : cursor.at + length])
    if kind in "OY":
        return Ignored(kind)
    raise PgOutputError(f"message type {kind!r} is not part of pgoutput protocol version 1")


def _row_message(kind: str, cursor: _Cursor) -> RowMessage:
    relation_oid = cursor.uint32()
    marker = chr(cursor.int8())
    old: list[TupleValue] | None = None
    old_is_full = False
    if marker in "KO":
        old_is_full = marker == "O"
        old = cursor.tuple_data()
        if kind == "D":
            return RowMessage(ChangeOp.DELETE, relation_oid, None, old, old_is_full, cursor.unchanged_toast)
        marker = chr(cursor.int8())
    if marker != "N":
        raise PgOutputError(f"{kind} message: expected a new row image ('N'), found {marker!r}")
    new = cursor.tuple_data()
    op = ChangeOp.INSERT if kind == "I" else ChangeOp.UPDATE
    return RowMessage(op, relation_oid, new, old, old_is_full, cursor.unchanged_toast)
