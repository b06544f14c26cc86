"""A table's shape as a binlog TableMapEvent describes it, for decoding the rows that follow that table map.

The catalog (sources/mysql/catalog.py) reads information_schema, which is the table's shape *now*. The reader
is usually behind: rows written before an ALTER TABLE (a column added, dropped, renamed or retyped) are still in
the binlog after the ALTER, and decoding them with today's columns puts values under the wrong names or types.
Each table map is written with the rows it precedes, so with binlog_row_metadata=FULL it is the shape those rows
were written with: column names, storage types, signedness, charsets, ENUM/SET members and the primary key.

The binlog leaves out what does not change how a value is stored (display widths, FLOAT(M,D), the geometry
subtype, MariaDB's UUID/INET6 type plugins, tinyint(1)), so a catalog column that agrees with everything the
binlog does say is used as is: it is the same column, described better. When the whole table agrees, the catalog
object itself is returned, so callers that cache per schema object keep their caches.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE

from cdc_pipeline.core.schema import ColumnSchema, TableSchema, qualify
from cdc_pipeline.core.type_families import SPATIAL_TYPES

# The fields a table map determines, compared against the catalog's column of the same name.
_COMPARED_FIELDS = (
    "data_type",
    "unsigned",
    "precision",
    "scale",
    "datetime_precision",
    "char_length",
    "enum_values",
    "nullable",
)

# data_type, information_schema's NUMERIC_PRECISION (signed, unsigned) and MariaDB's default display width
# (signed, unsigned). The binlog has no display width: the default is the best guess for column_type.
_INTEGERS: dict[int, tuple[str, tuple[int, int], tuple[int, int]]] = {
    FIELD_TYPE.TINY: ("tinyint", (3, 3), (4, 3)),
    FIELD_TYPE.SHORT: ("smallint", (5, 5), (6, 5)),
    FIELD_TYPE.INT24: ("mediumint", (7, 8), (9, 8)),
    FIELD_TYPE.LONG: ("int", (10, 10), (11, 10)),
    FIELD_TYPE.LONGLONG: ("bigint", (19, 20), (20, 20)),
}

# Fractional-second temporal types carry their precision in the table map.
_FSP_TEMPORALS = {FIELD_TYPE.DATETIME2: "datetime", FIELD_TYPE.TIMESTAMP2: "timestamp", FIELD_TYPE.TIME2: "time"}
# Pre-MySQL-5.6 (and MariaDB 5.3 "hires") temporal formats: their table-map entry has no metadata at all, so the
# fractional precision is not in the binlog.
_LEGACY_TEMPORALS = {FIELD_TYPE.DATETIME: "datetime", FIELD_TYPE.TIMESTAMP: "timestamp", FIELD_TYPE.TIME: "time"}

# BLOB/TEXT: the size of the length prefix tells the four sizes apart; information_schema reports the maximum
# length in bytes for them, whatever the charset.
_LOB_PREFIXES = {1: "tiny", 2: "", 3: "medium", 4: "long"}

# MariaDB type plugins are logged as the BINARY(n) they are stored in.
_BINARY_PLUGINS = {16: frozenset({"uuid", "inet6"}), 4: frozenset({"inet4"})}

# Bytes per character (SHOW CHARACTER SET's Maxlen), to turn a table map's byte lengths into characters.
_MAX_BYTES_PER_CHAR = {
    "armscii8": 1,
    "ascii": 1,
    "big5": 2,
    "binary": 1,
    "cp1250": 1,
    "cp1251": 1,
    "cp1256": 1,
    "cp1257": 1,
    "cp850": 1,
    "cp852": 1,
    "cp866": 1,
    "cp932": 2,
    "dec8": 1,
    "eucjpms": 3,
    "euckr": 2,
    "gb18030": 4,
    "gb2312": 2,
    "gbk": 2,
    "geostd8": 1,
    "greek": 1,
    "hebrew": 1,
    "hp8": 1,
    "keybcs2": 1,
    "koi8r": 1,
    "koi8u": 1,
    "latin1": 1,
    "latin2": 1,
    "latin5": 1,
    "latin7": 1,
    "macce": 1,
    "macroman": 1,
    "sjis": 2,
    "swe7": 1,
    "tis620": 1,
    "ucs2": 2,
    "ujis": 3,
    "utf16": 4,
    "utf16le": 4,
    "utf32": 4,
    "utf8": 3,  # MySQL's and old MariaDB's name of utf8mb3 (utf8_general_ci ...)
    "utf8mb3": 3,
    "utf8mb4": 4,
}
# Longest first, so that "utf8mb4_bin" is utf8mb4 and not utf8, "utf16le_..." not utf16.
_CHARSETS_LONGEST_FIRST = sorted(_MAX_BYTES_PER_CHAR, key=len, reverse=True)

# mysql-replication decodes ENUM/SET member names as UTF-8 whatever the column's charset, and puts "" for a
# member that is not valid UTF-8. For these charsets UTF-8 is the right decoding.
_UTF8_CHARSETS = frozenset({"utf8", "utf8mb3", "utf8mb4", "ascii"})
# Python codecs of the other charsets, where their names differ (MySQL's UCS-2/UTF-16/UTF-32 are big-endian).
_CODECS = {
    "latin1": "cp1252",  # MySQL's latin1 is Windows-1252
    "koi8r": "koi8_r",
    "koi8u": "koi8_u",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "ujis": "euc_jp",
    "eucjpms": "euc_jp",
    "sjis": "shift_jis",
    "euckr": "euc_kr",
    "greek": "iso8859_7",
    "hebrew": "iso8859_8",
    "latin2": "iso8859_2",
    "latin5": "iso8859_9",
    "latin7": "iso8859_13",
    "tis620": "tis_620",
    "macroman": "mac_roman",
    "macce": "mac_latin2",
}


@dataclass(frozen=True)
class _Derived:
    """A column as the table map describes it, and what the table map cannot tell about it."""

    column: ColumnSchema
    # Compared fields the binlog does not carry for this column: any catalog value is as good as ours.
    unknown: frozenset[str] = frozenset()
    # Catalog data types logged exactly like this column (geometry subtypes, BINARY-backed type plugins).
    # Such a catalog column is the same storage, described by what the binlog cannot carry, so only
    # nullability is compared.
    same_storage_types: frozenset[str] = frozenset()

    def matches(self, catalog_column: ColumnSchema) -> bool:
        if catalog_column.data_type != self.column.data_type and catalog_column.data_type in self.same_storage_types:
            return catalog_column.nullable == self.column.nullable
        return all(
            getattr(catalog_column, name) == getattr(self.column, name)
            for name in _COMPARED_FIELDS
            if name not in self.unknown
        )


class _Undescribable(Exception):
    """Raised while deriving one column; turned into a ValueError that names the table and column."""


def table_map_shape(
    database: str,
    table: str,
    columns: list[Column],
    null_bitmask: bytes,
    catalog: TableSchema | None,
    key_override: tuple[str, ...] | None,
) -> TableSchema:
    """The shape of `database.table` as a table map describes it (`TableMapEvent.columns`/`.null_bitmask`).

    `catalog` is the table's current schema, or None. A catalog column whose compared fields agree with the
    table map is reused as is; the catalog object itself is returned when every column and the key agree.
    Raises ValueError, naming the table and column, for anything in the table map that cannot be described.
    """
    qualified = qualify(database, table)
    catalog_columns = {c.name: c for c in catalog.columns} if catalog is not None else {}
    shaped: list[ColumnSchema] = []
    for index, column in enumerate(columns):
        name = column.name
        if not isinstance(name, str) or not name:
            # Names come from binlog_row_metadata=FULL; without them the library reads today's names from
            # information_schema, which is exactly the shape this module exists not to trust.
            raise ValueError(
                f"table {qualified}: table-map column #{index + 1} has no name; the source must run with "
                "binlog_row_metadata=FULL"
            )
        try:
            derived = _derive_column(column, _is_nullable(null_bitmask, index))
        except _Undescribable as error:
            raise ValueError(f"table {qualified}, column {name}: {error}") from None
        catalog_column = catalog_columns.get(name)
        shaped.append(
            catalog_column if catalog_column is not None and derived.matches(catalog_column) else derived.column
        )

    names = [c.name for c in shaped]
    if len(set(names)) != len(names):
        raise ValueError(f"table {qualified}: the table map repeats a column name: {names}")
    keys = _key_columns(qualified, columns, names, catalog, key_override)

    same_table = catalog is not None and (catalog.database, catalog.name) == (database, table)
    if (
        catalog is not None
        and same_table
        and len(shaped) == len(catalog.columns)
        and all(ours is theirs for ours, theirs in zip(shaped, catalog.columns, strict=True))
        and keys == catalog.key_columns
    ):
        # The same object, not an equal copy: callers cache compiled decoders and sink plans by identity.
        return catalog
    return TableSchema(database, table, tuple(shaped), keys)


def _is_nullable(null_bitmask: bytes, index: int) -> bool:
    if index // 8 >= len(null_bitmask):
        raise _Undescribable(
            f"the table map's null bitmask ({len(null_bitmask)} bytes) has no bit for column #{index + 1}"
        )
    return bool(null_bitmask[index // 8] >> (index % 8) & 1)


def _key_columns(
    qualified: str,
    columns: Sequence[Column],
    names: list[str],
    catalog: TableSchema | None,
    key_override: tuple[str, ...] | None,
) -> tuple[str, ...]:
    if key_override is not None:
        missing = [k for k in key_override if k not in names]
        if missing:
            # Rows without the configured key column cannot be keyed; better said here than as a KeyError later.
            raise ValueError(f"table {qualified}, column {missing[0]}: configured key column is not in the table map")
        return tuple(key_override)
    primary = [c.name for c in columns if getattr(c, "is_primary", False)]
    if primary:
        # Column.is_primary is a flag: the library drops the key's own column order. When the catalog's key is
        # the same set of columns, its order is the key's order.
        if catalog is not None and set(catalog.key_columns) == set(primary):
            return catalog.key_columns
        return tuple(primary)
    # No simple primary key in the table map: none, or one with a prefix part (PRIMARY_KEY_WITH_PREFIX, which
    # the library does not flag). The catalog's key still identifies these rows if all its columns are here.
    if catalog is not None and catalog.key_columns and all(k in names for k in catalog.key_columns):
        return catalog.key_columns
    return ()


def _charset_name(column: Column) -> str:
    """The column's charset, from its collation: the library keeps only the collation name and a Python
    encoding ("utf8" for both utf8mb3 and utf8mb4), not the charset id."""
    collation = getattr(column, "collation_name", None)
    if not collation:
        raise _Undescribable("the table map gives no known charset (needs binlog_row_metadata=FULL)")
    collation = str(collation).lower()
    for charset in _CHARSETS_LONGEST_FIRST:
        if collation == charset or collation.startswith(charset + "_"):
            return charset
    raise _Undescribable(f"unknown collation {collation}")


def _characters(column: Column, charset: str) -> int:
    characters, rest = divmod(int(column.max_length), _MAX_BYTES_PER_CHAR[charset])
    if rest:
        raise _Undescribable(f"{column.max_length} bytes is not a whole number of {charset} characters")
    return characters


def _members(column: Column, values: Sequence[str] | None, kind: str) -> tuple[str, ...]:
    if values is None:
        raise _Undescribable(f"the table map has no {kind.upper()} members (needs binlog_row_metadata=FULL)")
    charset = _charset_name(column)
    if charset in _UTF8_CHARSETS:
        return tuple(values)
    codec = _CODECS.get(charset, charset)
    try:
        codecs.lookup(codec)
    except LookupError:
        raise _Undescribable(f"{kind.upper()} members in charset {charset}, which has no Python codec") from None
    if "" in values:
        # The library turned a member it could not decode as UTF-8 into "": its real name is lost.
        raise _Undescribable(f"{kind.upper()} members in charset {charset} that the binlog library could not decode")
    # Undo the library's UTF-8 decoding (it succeeded, so the bytes come back exactly) and decode as the column's.
    try:
        return tuple(value.encode("utf-8").decode(codec) for value in values)
    except UnicodeError as error:
        raise _Undescribable(f"{kind.upper()} member not valid in charset {charset}: {error}") from None


def _quoted(members: tuple[str, ...]) -> str:
    return ",".join("'" + member.replace("'", "''") + "'" for member in members)


def _derive_column(column: Column, nullable: bool) -> _Derived:
    name, kind = str(column.name), column.type
    unsigned = bool(getattr(column, "unsigned", False))
    sign = " unsigned" if unsigned else ""

    def shaped(data_type: str, column_type: str, **facts: Any) -> ColumnSchema:
        return ColumnSchema(name=name, data_type=data_type, column_type=column_type, nullable=nullable, **facts)

    if kind in _INTEGERS:
        data_type, precisions, widths = _INTEGERS[kind]
        column_type = f"{data_type}({widths[int(unsigned)]}){sign}"
        precision = precisions[int(unsigned)]
        return _Derived(shaped(data_type, column_type, unsigned=unsigned, precision=precision, scale=0))
    if kind == FIELD_TYPE.NEWDECIMAL:
        precision, scale = int(column.precision), int(column.decimals)
        return _Derived(
            shaped(
                "decimal", f"decimal({precision},{scale}){sign}", unsigned=unsigned, precision=precision, scale=scale
            )
        )
    if kind in (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE):
        # Only the storage size is logged: FLOAT(M,D)/DOUBLE(M,D) store the same bytes as plain FLOAT/DOUBLE, so
        # the catalog's precision and scale are taken as they are; ours are what plain FLOAT/DOUBLE report.
        data_type, precision = ("float", 12) if kind == FIELD_TYPE.FLOAT else ("double", 22)
        return _Derived(
            shaped(data_type, data_type + sign, unsigned=unsigned, precision=precision),
            unknown=frozenset({"precision", "scale"}),
        )
    if kind == FIELD_TYPE.YEAR:
        # The signedness metadata flags YEAR as unsigned; information_schema (COLUMN_TYPE "year(4)") does not.
        return _Derived(shaped("year", "year(4)"))
    if kind in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return _Derived(shaped("date", "date"))
    if kind in _FSP_TEMPORALS:
        data_type, fsp = _FSP_TEMPORALS[kind], int(column.fsp)
        return _Derived(shaped(data_type, f"{data_type}({fsp})" if fsp else data_type, datetime_precision=fsp))
    if kind in _LEGACY_TEMPORALS:
        data_type = _LEGACY_TEMPORALS[kind]
        return _Derived(shaped(data_type, data_type, datetime_precision=0), unknown=frozenset({"datetime_precision"}))
    if kind == FIELD_TYPE.BIT:
        bits = int(column.bits)
        return _Derived(shaped("bit", f"bit({bits})", precision=bits))
    if kind in (FIELD_TYPE.STRING, FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING):
        fixed = kind == FIELD_TYPE.STRING
        charset = _charset_name(column)
        if charset == "binary":
            length = int(column.max_length)
            data_type = "binary" if fixed else "varbinary"
            derived = shaped(data_type, f"{data_type}({length})", char_length=length)
            return _Derived(
                derived, same_storage_types=_BINARY_PLUGINS.get(length, frozenset()) if fixed else frozenset()
            )
        length = _characters(column, charset)
        data_type = "char" if fixed else "varchar"
        return _Derived(shaped(data_type, f"{data_type}({length})", char_length=length))
    if kind == FIELD_TYPE.BLOB:
        length_size = int(column.length_size)
        if length_size not in _LOB_PREFIXES:
            raise _Undescribable(f"BLOB/TEXT with a {length_size}-byte length")
        data_type = _LOB_PREFIXES[length_size] + ("blob" if _charset_name(column) == "binary" else "text")
        # MariaDB's JSON is LONGTEXT with a CHECK (json_valid(...)), which the catalog reads as json: the
        # same storage, described better.
        same = frozenset({"json"}) if data_type == "longtext" else frozenset()
        return _Derived(shaped(data_type, data_type, char_length=(1 << (8 * length_size)) - 1), same_storage_types=same)
    if kind == FIELD_TYPE.ENUM:
        # The library puts "" first: the index 0 of the invalid value, not a member.
        members = _members(column, column.enum_values[1:] if column.enum_values is not None else None, "enum")
        char_length = max((len(m) for m in members), default=0)
        return _Derived(shaped("enum", f"enum({_quoted(members)})", char_length=char_length, enum_values=members))
    if kind == FIELD_TYPE.SET:
        members = _members(column, column.set_values, "set")
        # information_schema: the longest value, every member joined by commas.
        char_length = sum(len(m) for m in members) + max(len(members) - 1, 0)
        return _Derived(shaped("set", f"set({_quoted(members)})", char_length=char_length, enum_values=members))
    if kind == FIELD_TYPE.JSON:
        # MySQL's binary JSON: information_schema says json, with no character length.
        return _Derived(shaped("json", "json"))
    if kind == FIELD_TYPE.GEOMETRY:
        # The subtype (POINT, ...) is in the table map's GEOMETRY_TYPE metadata, which the library does not put
        # on the column; the catalog's subtype is taken when it is one.
        return _Derived(shaped("geometry", "geometry"), same_storage_types=SPATIAL_TYPES)
    raise _Undescribable(f"binlog field type {kind} is not supported")
