"""table_map_shape describes rows as the binlog wrote them: like the catalog for an unchanged table, and with the
old columns for rows written before an ALTER TABLE."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.column import Column
from pymysqlreplication.row_event import TableMapEvent, WriteRowsEvent

from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.local_servers.mariadb import LocalMariaDb
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline.sources.mysql.table_map_shape import table_map_shape

COMPARED = (
    "data_type",
    "unsigned",
    "precision",
    "scale",
    "datetime_precision",
    "char_length",
    "enum_values",
    "nullable",
)
_numbers = itertools.count()

WIDE_TABLE = """CREATE TABLE wide (
    id_a INT NOT NULL,
    id_b VARCHAR(20) NOT NULL,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED NOT NULL DEFAULT 0, bi BIGINT, biu BIGINT UNSIGNED,
    d DECIMAL(12,4), d0 DECIMAL(5,0) UNSIGNED, d65 DECIMAL(65,30) NOT NULL DEFAULT 0, f FLOAT, db DOUBLE,
    dt DATE, dt0 DATETIME, dt1 DATETIME(1), dt2 DATETIME(2), dt3 DATETIME(3), dt4 DATETIME(4), dt5 DATETIME(5),
    dt6 DATETIME(6) NOT NULL DEFAULT '2000-01-01', ts TIMESTAMP(3) NULL, ts0 TIMESTAMP NULL, tm TIME(6), tm0 TIME,
    y YEAR,
    c CHAR(10), c255 CHAR(255), vc VARCHAR(300) NOT NULL DEFAULT '', cl CHAR(5) CHARACTER SET latin1,
    vcl VARCHAR(40) CHARACTER SET latin1, v3 VARCHAR(50) CHARACTER SET utf8mb3,
    vu16 VARCHAR(10) CHARACTER SET utf16, bin BINARY(8), vbin VARBINARY(100),
    tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT, txl TEXT CHARACTER SET latin1,
    tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
    e ENUM('small', 'medium', 'it''s', 'größe') NOT NULL DEFAULT 'small', el ENUM('x', 'yy') CHARACTER SET latin1,
    s SET('a', 'bb', 'ccc'), j JSON, b1 BIT(1), b13 BIT(13), b64 BIT(64) NOT NULL DEFAULT 0, bo BOOLEAN,
    g GEOMETRY,
    PRIMARY KEY (id_b, id_a)
)"""


@dataclass(frozen=True)
class TableMap:
    database: str
    table: str
    columns: list[Column]
    null_bitmask: bytes

    def shape(self, catalog: TableSchema | None, key_override: tuple[str, ...] | None = None) -> TableSchema:
        return table_map_shape(self.database, self.table, self.columns, self.null_bitmask, catalog, key_override)


@pytest.fixture
def database(mariadb: LocalMariaDb) -> Iterator[str]:
    name = f"tms_{next(_numbers)}"
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def _execute(mariadb: LocalMariaDb, database: str, *statements: str) -> None:
    with mariadb.settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"USE `{database}`")
        for statement in statements:
            cursor.execute(statement)


def _table_maps(mariadb: LocalMariaDb, database: str, start: BinlogPosition) -> list[TableMap]:
    """The table maps of `database` written since `start`, in binlog order."""
    stream = BinLogStreamReader(
        connection_settings=mariadb.settings.as_pymysql_kwargs(),
        server_id=4711,
        resume_stream=True,
        log_file=start.file,
        log_pos=start.pos,
        blocking=False,
        only_events=[TableMapEvent, WriteRowsEvent],
        only_schemas=[database],
    )
    try:
        return [
            TableMap(event.schema, event.table, list(event.columns), bytes(event.null_bitmask))
            for event in stream
            if isinstance(event, TableMapEvent)
        ]
    finally:
        stream.close()


def _catalog(mariadb: LocalMariaDb, database: str, table: str) -> TableSchema:
    schema = MySqlCatalog(mariadb.settings, TableSelection()).table(database, table)
    assert schema is not None
    return schema


def _facts(column: ColumnSchema) -> tuple[Any, ...]:
    return tuple(getattr(column, name) for name in COMPARED)


def _differences(ours: TableSchema, theirs: TableSchema) -> dict[str, tuple[Any, Any]]:
    return {
        a.name: (_facts(a), _facts(b))
        for a, b in zip(ours.columns, theirs.columns, strict=True)
        if _facts(a) != _facts(b)
    }


def test_every_type_is_described_like_the_catalog(mariadb: LocalMariaDb, database: str) -> None:
    start = current_binlog_position(mariadb.settings)
    _execute(mariadb, database, WIDE_TABLE, "INSERT INTO wide (id_a, id_b, e) VALUES (1, 'one', 'größe')")
    (table_map,) = _table_maps(mariadb, database, start)
    catalog = _catalog(mariadb, database, "wide")

    shape = table_map.shape(None)
    assert shape.column_names == catalog.column_names
    # MariaDB's JSON is logged as the LONGTEXT it is stored in; only the catalog (its CHECK
    # (json_valid(...))) tells it is JSON, and with the catalog the shape says so (below).
    assert set(_differences(shape, catalog)) == {"j"}
    assert (shape.column("j").data_type, catalog.column("j").data_type) == ("longtext", "json")
    # mysql-replication only flags key columns (Column.is_primary), so without the catalog the key is in column
    # order; with it, in the key's own order (below: the catalog object, whose key is (id_b, id_a)).
    assert shape.key_columns == ("id_a", "id_b") and catalog.key_columns == ("id_b", "id_a")
    # The display width of BOOLEAN is not in the binlog, MariaDB's JSON reads as its LONGTEXT; every other
    # column type reads as information_schema's.
    assert {c.name: c.column_type for c in shape.columns if c.column_type != catalog.column(c.name).column_type} == {
        "bo": "tinyint(4)",
        "j": "longtext",
    }
    assert shape.column("e").enum_values == ("small", "medium", "it's", "größe")
    assert shape.column("el").enum_values == ("x", "yy")  # latin1 members, decoded as latin1

    # Identical to the catalog: the catalog object itself.
    assert table_map.shape(catalog) is catalog
    # A configured key differs from the catalog's: a new schema, but of the catalog's column objects.
    keyed = table_map.shape(catalog, ("id_a",))
    assert keyed is not catalog and keyed.key_columns == ("id_a",)
    assert all(ours is theirs for ours, theirs in zip(keyed.columns, catalog.columns, strict=True))


def test_rows_before_an_alter_keep_their_columns(mariadb: LocalMariaDb, database: str) -> None:
    start = current_binlog_position(mariadb.settings)
    _execute(
        mariadb,
        database,
        "CREATE TABLE evolving (id INT PRIMARY KEY, qty INT NOT NULL, note VARCHAR(20), old_col CHAR(3))",
        "INSERT INTO evolving VALUES (1, 10, 'first', 'abc')",
        "ALTER TABLE evolving ADD COLUMN added DATETIME(3) NULL",
        "ALTER TABLE evolving DROP COLUMN old_col",
        "ALTER TABLE evolving MODIFY qty BIGINT NOT NULL",
        "ALTER TABLE evolving RENAME COLUMN note TO remark",
        "INSERT INTO evolving VALUES (2, 20000000000, 'second', '2024-01-02 03:04:05.678')",
    )
    before, after = _table_maps(mariadb, database, start)
    catalog = _catalog(mariadb, database, "evolving")
    assert catalog.column_names == ["id", "qty", "remark", "added"]
    assert catalog.column("qty").data_type == "bigint"

    old = before.shape(catalog)
    assert old is not catalog
    assert old.column_names == ["id", "qty", "note", "old_col"] and old.key_columns == ("id",)
    assert old.column("id") is catalog.column("id")  # unchanged by the ALTERs: the catalog's own column
    assert (old.column("qty").data_type, old.column("qty").precision, old.column("qty").nullable) == ("int", 10, False)
    assert (old.column("note").data_type, old.column("note").char_length) == ("varchar", 20)
    assert (old.column("old_col").data_type, old.column("old_col").char_length) == ("char", 3)
    assert before.shape(None) == old

    assert after.shape(catalog) is catalog
    assert _differences(after.shape(None), catalog) == {}


def test_what_the_binlog_does_not_carry_comes_from_the_catalog(mariadb: LocalMariaDb, database: str) -> None:
    """FLOAT(M,D), geometry subtypes, UUID/INET6 (logged as BINARY(16)) and display widths are not in the table
    map; a catalog column that agrees with all the table map says is kept, without the catalog it reads as the
    storage type."""
    start = current_binlog_position(mariadb.settings)
    _execute(
        mariadb,
        database,
        "CREATE TABLE unlogged (id INT PRIMARY KEY, f FLOAT(7,3), dd DOUBLE(10,2), pt POINT, u UUID, i6 INET6,"
        " flag TINYINT(1), b16 BINARY(16))",
        "INSERT INTO unlogged (id) VALUES (1)",
    )
    (table_map,) = _table_maps(mariadb, database, start)
    catalog = _catalog(mariadb, database, "unlogged")
    assert table_map.shape(catalog) is catalog
    storage = {c.name: (c.data_type, c.precision, c.scale, c.char_length) for c in table_map.shape(None).columns}
    assert storage == {
        "id": ("int", 10, 0, None),
        "f": ("float", 12, None, None),
        "dd": ("double", 22, None, None),
        "pt": ("geometry", None, None, None),
        "u": ("binary", None, None, 16),
        "i6": ("binary", None, None, 16),
        "flag": ("tinyint", 3, 0, None),
        "b16": ("binary", None, None, 16),
    }


def test_undecodable_enum_members_are_refused(mariadb: LocalMariaDb, database: str) -> None:
    """The binlog library reads ENUM members as UTF-8 and drops the latin1 'é': the member is lost, not guessed."""
    start = current_binlog_position(mariadb.settings)
    _execute(
        mariadb,
        database,
        "CREATE TABLE accents (id INT PRIMARY KEY, e ENUM('é', 'x') CHARACTER SET latin1)",
        "INSERT INTO accents VALUES (1, 'x')",
    )
    (table_map,) = _table_maps(mariadb, database, start)
    with pytest.raises(ValueError, match=rf"{database}\.accents, column e: ENUM members in charset latin1"):
        table_map.shape(_catalog(mariadb, database, "accents"))


def test_table_map_without_a_primary_key_takes_the_catalogs_when_present(mariadb: LocalMariaDb, database: str) -> None:
    start = current_binlog_position(mariadb.settings)
    _execute(
        mariadb,
        database,
        "CREATE TABLE prefixed (name TEXT NOT NULL, v INT, PRIMARY KEY (name(10)))",  # a prefix key: not flagged
        "INSERT INTO prefixed VALUES ('a', 1)",
    )
    (table_map,) = _table_maps(mariadb, database, start)
    catalog = _catalog(mariadb, database, "prefixed")
    assert catalog.key_columns == ("name",)
    assert table_map.shape(None).key_columns == ()
    assert table_map.shape(catalog) is catalog
    with pytest.raises(ValueError, match=r"column missing: configured key column is not in the table map"):
        table_map.shape(catalog, ("missing",))
