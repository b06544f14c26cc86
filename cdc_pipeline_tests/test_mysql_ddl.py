"""Reading binlog DDL into schema changes (sources/mysql/ddl.py): pure unit tests, no database."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from cdc_pipeline.core.schema_changes import SchemaChange, SchemaChangeKind
from cdc_pipeline.sources.mysql.ddl import CURRENT_TIMESTAMP, DdlOutcome, parse_ddl

K = SchemaChangeKind
POSITION = "mysql-bin.000003:4711"
VERSION = 42
Selects = Callable[[str, str], bool]


def everything(database: str, table: str) -> bool:
    return True


def only(*names: str) -> Selects:
    wanted = set(names)
    return lambda database, table: f"{database}.{table}" in wanted


def parse(statement: str, selects: Selects = everything, database: str = "shop") -> DdlOutcome:
    return parse_ddl(statement, database, POSITION, VERSION, selects)


def changes(statement: str, selects: Selects = everything, database: str = "shop") -> list[SchemaChange]:
    outcome = parse(statement, selects, database)
    assert outcome.is_ddl
    for change in outcome.changes:
        assert change.position == POSITION
        assert change.version == VERSION
        if "'" in statement or '"' in statement:
            # String literals never leave the parser (see the test of without_string_literals).
            assert "'?'" in change.statement
        else:
            assert change.statement == statement
    return outcome.changes


def one(statement: str, selects: Selects = everything, database: str = "shop") -> SchemaChange:
    found = changes(statement, selects, database)
    assert len(found) == 1, found
    return found[0]


def kinds(found: list[SchemaChange]) -> list[tuple[SchemaChangeKind, str, str | None]]:
    return [(c.kind, c.table, c.column) for c in found]


# ADD COLUMN


@pytest.mark.parametrize(
    ("column", "implicit"),
    [
        ("INT UNSIGNED NOT NULL", "0"),
        ("DECIMAL(5,2) NOT NULL", "0"),
        ("VARCHAR(3) NOT NULL", ""),
        ("ENUM('first','second') NOT NULL", "first"),
        ("TIME NOT NULL", "00:00:00"),
    ],
)
def test_a_not_null_column_added_without_default_takes_the_types_implicit_default(column: str, implicit: str) -> None:
    change = one(f"ALTER TABLE t ADD COLUMN c {column}")
    assert (change.kind, change.has_default, change.default) == (K.ADD_COLUMN, True, implicit)


def test_a_not_null_date_added_without_default_is_not_guessed() -> None:
    # The existing rows hold the zero date, which no sink can represent: the table waits for the operator.
    assert one("ALTER TABLE t ADD COLUMN c DATETIME NOT NULL").kind is K.UNRECOGNISED


def test_add_columns_several_actions_with_positions_and_defaults() -> None:
    found = changes("ALTER TABLE t ADD COLUMN c INT DEFAULT 5 AFTER b, ADD d VARCHAR(10) DEFAULT 'x' FIRST, ADD e INT")
    assert kinds(found) == [(K.ADD_COLUMN, "shop.t", "c"), (K.ADD_COLUMN, "shop.t", "d"), (K.ADD_COLUMN, "shop.t", "e")]
    assert (found[0].has_default, found[0].default) == (True, "5")
    assert (found[1].has_default, found[1].default) == (True, "x")
    assert (found[2].has_default, found[2].default) == (False, None)


@pytest.mark.parametrize(
    ("definition", "default"),
    [
        ("DECIMAL(5,2) DEFAULT 1.50", "1.50"),
        ("INT DEFAULT -5", "-5"),
        ("INT NOT NULL DEFAULT '7'", "7"),
        ("VARCHAR(5) DEFAULT 'it''s'", "it's"),
        ("VARCHAR(5) DEFAULT ''", ""),
        ("VARCHAR(5) DEFAULT _utf8mb4'x'", "x"),
        ("INT DEFAULT (5)", "5"),
        ("TINYINT(1) DEFAULT TRUE", "1"),
        ("ENUM('a','b') NOT NULL DEFAULT 'a' COMMENT 'the state'", "a"),
    ],
)
def test_add_column_literal_default_is_text(definition: str, default: str) -> None:
    change = one(f"ALTER TABLE t ADD COLUMN c {definition}")
    assert (change.kind, change.column, change.has_default, change.default) == (K.ADD_COLUMN, "c", True, default)


@pytest.mark.parametrize("definition", ["INT DEFAULT NULL", "INT", "INT NULL", "ENUM('a','b')"])
def test_add_column_without_default_or_null_default(definition: str) -> None:
    change = one(f"ALTER TABLE t ADD c {definition}")
    assert (change.kind, change.column, change.has_default, change.default) == (K.ADD_COLUMN, "c", False, None)


@pytest.mark.parametrize(
    "definition",
    [
        "TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
        "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP",
        "DATETIME(3) DEFAULT CURRENT_TIMESTAMP(3)",
        "DATETIME DEFAULT CURRENT_TIMESTAMP()",
        "DATETIME(6) DEFAULT NOW(6)",
        "DATETIME DEFAULT now()",
        "DATETIME DEFAULT LOCALTIMESTAMP",
        "DATETIME DEFAULT (CURRENT_TIMESTAMP)",
    ],
)
def test_add_column_current_timestamp_default(definition: str) -> None:
    assert CURRENT_TIMESTAMP == "CURRENT_TIMESTAMP"  # the marker the sinks look for
    change = one(f"ALTER TABLE t ADD COLUMN c {definition}")
    assert (change.kind, change.column, change.has_default, change.default) == (
        K.ADD_COLUMN,
        "c",
        True,
        CURRENT_TIMESTAMP,
    )


@pytest.mark.parametrize(
    "definition",
    [
        "INT DEFAULT (1 + 2)",
        "CHAR(36) DEFAULT (UUID())",
        "DATE DEFAULT (CURRENT_DATE)",
        "BIT(1) DEFAULT b'0'",
        "INT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        "INT GENERATED ALWAYS AS (a + 1) VIRTUAL",
        "INT AS (a + 1) STORED",
    ],
)
def test_add_column_whose_existing_values_are_unknown_is_unrecognised(definition: str) -> None:
    change = one(f"ALTER TABLE t ADD COLUMN c {definition}, ADD COLUMN d INT")
    assert (change.kind, change.table, change.column) == (K.UNRECOGNISED, "shop.t", "c")


def test_add_column_parenthesised_list_adds_each_column_with_its_default() -> None:
    found = changes("ALTER TABLE t ADD COLUMN (a INT NOT NULL DEFAULT 5, b VARCHAR(10) DEFAULT 'x, y')")
    assert [(c.kind, c.column, c.default, c.has_default) for c in found] == [
        (K.ADD_COLUMN, "a", "5", True),
        (K.ADD_COLUMN, "b", "x, y", True),
    ]


# Spellings from Debezium's and MariaDB's DDL suites that sqlglot 30 does not read as they are.
@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("ALTER TABLE t ADD KEY IF NOT EXISTS k (a)", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ADD UNIQUE INDEX IF NOT EXISTS u (a)", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ADD FOREIGN KEY IF NOT EXISTS (a) REFERENCES u (id)", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t DROP KEY IF EXISTS k", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t MODIFY IF EXISTS a BIGINT", [(K.MODIFY_COLUMN, "a")]),
        ("ALTER TABLE t MODIFY COLUMN IF EXISTS a BIGINT", [(K.MODIFY_COLUMN, "a")]),
        ("ALTER TABLE t CHANGE COLUMN IF EXISTS a b INT", [(K.RENAME_COLUMN, "b"), (K.MODIFY_COLUMN, "b")]),
        ("ALTER TABLE t ADD (c INT, d INT)", [(K.ADD_COLUMN, "c"), (K.ADD_COLUMN, "d")]),
        ("ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t DISABLE KEYS, ADD COLUMN c INT", [(K.ADD_COLUMN, "c")]),
        ("ALTER TABLE t ENABLE KEYS, DROP COLUMN c", [(K.DROP_COLUMN, "c")]),
        ("ALTER TABLE t MAX_ROWS 100", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t CHECKSUM 1, PACK_KEYS 1, ADD COLUMN c INT", [(K.ADD_COLUMN, "c")]),
        ("ALTER TABLE t ALTER INDEX k IGNORED", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ALTER INDEX k NOT IGNORED, MODIFY a BIGINT", [(K.MODIFY_COLUMN, "a")]),
        ("ALTER TABLE t WAIT 5 ADD COLUMN c INT", [(K.ADD_COLUMN, "c")]),
        ("ALTER TABLE t NOWAIT DROP COLUMN c", [(K.DROP_COLUMN, "c")]),
        ("ALTER TABLE t ADD CHECK (a > 0)", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ADD CHECK (a > 0), ADD COLUMN c INT", [(K.ADD_COLUMN, "c")]),
        ("ALTER TABLE t ALTER CHECK ck NOT ENFORCED", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ADD COLUMN IF NOT EXISTS (c INT, d INT)", [(K.ADD_COLUMN, "c"), (K.ADD_COLUMN, "d")]),
        ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY IF NOT EXISTS (a) REFERENCES u (id)", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t RENAME KEY IF EXISTS k TO k2", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t PARTITION BY HASH(a) PARTITIONS 4", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t ADD PARTITION (PARTITION p3 VALUES LESS THAN (2002))", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t REORGANIZE PARTITION p0 INTO (PARTITION a VALUES LESS THAN (5))", [(K.NO_EFFECT, None)]),
        ("ALTER TABLE t REMOVE PARTITIONING", [(K.NO_EFFECT, None)]),
    ],
)
def test_alter_spellings_of_the_peer_suites_are_read(
    statement: str, expected: list[tuple[SchemaChangeKind, str | None]]
) -> None:
    assert [(c.kind, c.column) for c in changes(statement)] == expected
    assert all(c.table == "shop.t" for c in changes(statement))


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER IGNORE TABLE t ADD UNIQUE KEY u (a)",  # deletes the rows that break the new key
        "ALTER TABLE t ADD PERIOD FOR SYSTEM_TIME(s, e)",  # system versioning changes what rows mean
    ],
)
def test_alter_actions_that_change_rows_stay_unread(statement: str) -> None:
    assert kinds(changes(statement)) == [(K.UNRECOGNISED, "shop.t", None)]


# DROP, MODIFY, CHANGE, RENAME COLUMN, ALTER COLUMN


def test_drop_columns() -> None:
    found = changes("ALTER TABLE t DROP COLUMN c, DROP d, DROP COLUMN IF EXISTS e")
    assert kinds(found) == [
        (K.DROP_COLUMN, "shop.t", "c"),
        (K.DROP_COLUMN, "shop.t", "d"),
        (K.DROP_COLUMN, "shop.t", "e"),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t MODIFY COLUMN c BIGINT",
        "ALTER TABLE t MODIFY c BIGINT NOT NULL",
        "ALTER TABLE t CHANGE c c BIGINT",
    ],
)
def test_modify_column(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table, change.column, change.old_name) == (K.MODIFY_COLUMN, "shop.t", "c", None)


def test_change_column_with_new_name_is_rename_then_modify() -> None:
    found = changes("ALTER TABLE t CHANGE COLUMN a b BIGINT AFTER c")
    assert [(c.kind, c.column, c.old_name) for c in found] == [
        (K.RENAME_COLUMN, "b", "a"),
        (K.MODIFY_COLUMN, "b", None),
    ]


def test_rename_column() -> None:
    change = one("ALTER TABLE t RENAME COLUMN a TO b")
    assert (change.kind, change.table, change.column, change.old_name) == (K.RENAME_COLUMN, "shop.t", "b", "a")


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t ALTER COLUMN c SET DEFAULT 3",
        "ALTER TABLE t ALTER c SET DEFAULT 'x'",
        "ALTER TABLE t ALTER COLUMN c DROP DEFAULT",
        "ALTER TABLE t ALTER COLUMN c SET DEFAULT (now())",
    ],
)
def test_column_default_changes_have_no_effect(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table, change.column) == (K.NO_EFFECT, "shop.t", None)


# Primary keys


def test_drop_primary_key() -> None:
    change = one("ALTER TABLE t DROP PRIMARY KEY")
    assert (change.kind, change.table, change.key_columns) == (K.PRIMARY_KEY, "shop.t", ())


def test_drop_and_add_primary_key_is_one_change_with_the_new_key() -> None:
    change = one("ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (a, b)")
    assert (change.kind, change.key_columns) == (K.PRIMARY_KEY, ("a", "b"))


def test_add_constraint_primary_key() -> None:
    change = one("ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY (a)")
    assert (change.kind, change.key_columns) == (K.PRIMARY_KEY, ("a",))


def test_key_change_comes_after_the_column_it_uses() -> None:
    found = changes("ALTER TABLE t DROP PRIMARY KEY, ADD COLUMN c INT NOT NULL DEFAULT 1, ADD PRIMARY KEY (c)")
    assert [(c.kind, c.column, c.key_columns) for c in found] == [
        (K.ADD_COLUMN, "c", ()),
        (K.PRIMARY_KEY, None, ("c",)),
    ]


def test_drop_index_named_primary_drops_the_key() -> None:
    change = one("ALTER TABLE t DROP INDEX `PRIMARY`")
    assert (change.kind, change.key_columns) == (K.PRIMARY_KEY, ())


@pytest.mark.parametrize(
    "statement",
    [
        "DROP INDEX `PRIMARY` ON t",
        "drop index `primary` on shop.t",
        "DROP INDEX `PRIMARY` ON t ALGORITHM=INPLACE LOCK=NONE",  # read by the tokenizer
    ],
)
def test_drop_index_primary_on_a_table_drops_the_key(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table, change.key_columns) == (K.PRIMARY_KEY, "shop.t", ())


@pytest.mark.parametrize("statement", ["DROP INDEX idx ON t", "DROP INDEX idx ON t ALGORITHM=INPLACE"])
def test_dropping_another_index_changes_nothing(statement: str) -> None:
    assert one(statement).kind is K.NO_EFFECT


# Table renames


@pytest.mark.parametrize(
    "statement", ["ALTER TABLE t RENAME TO u", "ALTER TABLE t RENAME AS u", "ALTER TABLE t RENAME u"]
)
def test_alter_table_rename(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table, change.old_name) == (K.RENAME_TABLE, "shop.u", "shop.t")


def test_alter_table_rename_to_another_database_with_other_actions() -> None:
    found = changes("ALTER TABLE t ADD c INT, RENAME TO other.u")
    assert [(c.kind, c.table, c.column, c.old_name) for c in found] == [
        (K.ADD_COLUMN, "shop.t", "c", None),
        (K.RENAME_TABLE, "other.u", None, "shop.t"),
    ]


def test_rename_table_pairs() -> None:
    found = changes("RENAME TABLE a TO b, other.c TO other.d")
    assert [(c.kind, c.table, c.old_name) for c in found] == [
        (K.RENAME_TABLE, "shop.b", "shop.a"),
        (K.RENAME_TABLE, "other.d", "other.c"),
    ]


def test_rename_table_chain_in_statement_order() -> None:
    found = changes("RENAME TABLE b TO c, a TO b")
    assert [(c.kind, c.table, c.old_name) for c in found] == [
        (K.RENAME_TABLE, "shop.c", "shop.b"),
        (K.RENAME_TABLE, "shop.b", "shop.a"),
    ]


def test_rename_table_with_backticks_spaces_and_escaped_backticks() -> None:
    change = one("RENAME TABLE `sh op`.`my table` TO `sh op`.`your ``new`` table`")
    # A part holding a backtick is written quoted in the pipeline's table names (core/schema.py: qualify).
    assert (change.kind, change.table, change.old_name) == (
        K.RENAME_TABLE,
        "sh op.`your ``new`` table`",
        "sh op.my table",
    )


def test_rename_from_selected_to_unselected_drops_the_old() -> None:
    change = one("RENAME TABLE t TO t_archive", only("shop.t"))
    assert (change.kind, change.table, change.old_name) == (K.DROP_TABLE, "shop.t", None)


def test_rename_from_unselected_to_selected_creates_the_new() -> None:
    change = one("RENAME TABLE staging TO t", only("shop.t"))
    assert (change.kind, change.table, change.old_name) == (K.CREATE_TABLE, "shop.t", None)


def test_alter_rename_from_selected_to_unselected_drops_the_old() -> None:
    change = one("ALTER TABLE t RENAME TO t_archive", only("shop.t"))
    assert (change.kind, change.table) == (K.DROP_TABLE, "shop.t")


@pytest.mark.parametrize(
    "statement",
    [
        # gh-ost's cut-over
        "RENAME TABLE `shop`.`t` TO `shop`.`_t_del`, `shop`.`_t_gho` TO `shop`.`t`",
        # pt-online-schema-change's swap
        "RENAME TABLE shop.t TO shop._t_old, shop._t_new TO shop.t",
    ],
)
def test_online_schema_change_swap_keeps_the_sink_table(statement: str) -> None:
    change = one(statement, only("shop.t"))
    assert (change.kind, change.table, change.old_name) == (K.NO_EFFECT, "shop.t", None)


def test_renamed_away_to_selected_name_and_replaced_by_unselected_copy() -> None:
    found = changes("RENAME TABLE t TO t_v1, t_new TO t", only("shop.t", "shop.t_v1"))
    assert [(c.kind, c.table, c.old_name) for c in found] == [
        (K.RENAME_TABLE, "shop.t_v1", "shop.t"),
        (K.CREATE_TABLE, "shop.t", None),
    ]


def test_rename_away_and_back_has_no_effect() -> None:
    change = one("RENAME TABLE t TO tmp, tmp TO t", only("shop.t"))
    assert (change.kind, change.table) == (K.NO_EFFECT, "shop.t")


def test_swap_of_two_selected_tables_is_unrecognised() -> None:
    found = changes("RENAME TABLE a TO tmp, b TO a, tmp TO b", only("shop.a", "shop.b"))
    assert kinds(found) == [(K.UNRECOGNISED, "shop.a", None), (K.UNRECOGNISED, "shop.b", None)]


def test_rename_between_unselected_tables_gives_nothing() -> None:
    assert changes("RENAME TABLE x TO y", only("shop.t")) == []


# Indexes, options, constraints: no effect


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t ADD INDEX ix (a)",
        "ALTER TABLE t ADD KEY ix (a), ADD UNIQUE KEY ux (b)",
        "ALTER TABLE t ADD UNIQUE (a)",
        "ALTER TABLE t ADD FULLTEXT INDEX ft (a)",
        "ALTER TABLE t DROP INDEX ix",
        "ALTER TABLE t DROP KEY ix",
        "ALTER TABLE t RENAME INDEX a TO b",
        "ALTER TABLE t RENAME KEY a TO b",
        "ALTER TABLE t ALTER INDEX ix INVISIBLE",
        "ALTER TABLE t ALTER COLUMN c SET INVISIBLE",
        "CREATE INDEX ix ON t (a)",
        "CREATE UNIQUE INDEX ix ON t (a)",
        "CREATE FULLTEXT INDEX ix ON t (a)",
        "CREATE INDEX ix ON t (a) ALGORITHM=INPLACE LOCK=NONE",
        "DROP INDEX ix ON t",
        "DROP INDEX ix ON t ALGORITHM=INPLACE",
        "ALTER TABLE t COMMENT = 'x'",
        "ALTER TABLE t ENGINE=InnoDB",
        "ALTER TABLE t ROW_FORMAT=DYNAMIC",
        "ALTER TABLE t AUTO_INCREMENT=100",
        "ALTER TABLE t DEFAULT CHARSET=utf8mb4",
        "ALTER TABLE t CHARACTER SET utf8mb4",
        "ALTER TABLE t KEY_BLOCK_SIZE=8",
        "ALTER TABLE t COMMENT 'x', ROW_FORMAT=COMPRESSED, KEY_BLOCK_SIZE=8",
        "ALTER TABLE t ALGORITHM=INPLACE",
        "ALTER TABLE t ENGINE=InnoDB, ALGORITHM=INPLACE, LOCK=NONE",
        "ALTER TABLE t FORCE",
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id) ON DELETE CASCADE",
        "ALTER TABLE t DROP FOREIGN KEY fk",
        "ALTER TABLE t ADD CONSTRAINT ck CHECK (a > 0)",
        "ALTER TABLE t DROP CHECK ck",
        "ALTER TABLE t DROP CONSTRAINT ck",
        "ALTER TABLE t",
        "ALTER TABLE t DISABLE KEYS",
        "/*!40000 ALTER TABLE t ENABLE KEYS */",
    ],
)
def test_statements_without_effect_on_the_sink(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table, change.column) == (K.NO_EFFECT, "shop.t", None)


def test_algorithm_and_lock_are_ignored_with_column_actions() -> None:
    found = changes("ALTER TABLE t ADD COLUMN c INT, ADD INDEX (c), ALGORITHM=INPLACE, LOCK=NONE")
    assert kinds(found) == [(K.ADD_COLUMN, "shop.t", "c")]


def test_convert_to_a_character_set_changes_nothing_but_to_binary_stays_unread() -> None:
    change = one("ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    assert (change.kind, change.table, change.column) == (K.NO_EFFECT, "shop.t", None)
    change = one("ALTER TABLE t CONVERT TO CHARACTER SET binary")
    assert (change.kind, change.table, change.column) == (K.UNRECOGNISED, "shop.t", None)


# TRUNCATE, CREATE, DROP


@pytest.mark.parametrize("statement", ["TRUNCATE TABLE t", "TRUNCATE t", "truncate table `shop`.`t`"])
def test_truncate(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table) == (K.TRUNCATE, "shop.t")


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE t (a INT PRIMARY KEY) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS t (a INT)",
        "CREATE TABLE t LIKE u",
        "CREATE TABLE IF NOT EXISTS shop.t LIKE other.u",
        "CREATE TABLE t SELECT * FROM u",
        "CREATE TABLE t AS SELECT * FROM u",
    ],
)
def test_create_table(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table) == (K.CREATE_TABLE, "shop.t")


def test_create_or_replace_drops_the_old_rows_first() -> None:
    found = changes("CREATE OR REPLACE TABLE t (a INT)")
    assert kinds(found) == [(K.DROP_TABLE, "shop.t", None), (K.CREATE_TABLE, "shop.t", None)]


def test_drop_tables() -> None:
    found = changes("DROP TABLE IF EXISTS a, other.b, `c d`")
    assert kinds(found) == [
        (K.DROP_TABLE, "shop.a", None),
        (K.DROP_TABLE, "other.b", None),
        (K.DROP_TABLE, "shop.c d", None),
    ]


def test_mariadb_generated_comment_in_drop_table() -> None:
    found = changes("DROP TABLE IF EXISTS `a`,`b` /* generated by server */")
    assert kinds(found) == [(K.DROP_TABLE, "shop.a", None), (K.DROP_TABLE, "shop.b", None)]


def test_leading_comment_is_stripped() -> None:
    change = one("/* ApplicationName=DBeaver */ ALTER TABLE t ADD c INT")
    assert (change.kind, change.table, change.column) == (K.ADD_COLUMN, "shop.t", "c")


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TEMPORARY TABLE a",
        "DROP TEMPORARY TABLE IF EXISTS a, b",
        "CREATE TEMPORARY TABLE a (x INT)",
        "CREATE TEMPORARY TABLE IF NOT EXISTS a (x INT) PARTITION BY HASH(x)",
        # MySQL writes this when a session that made temporary tables ends: the comment's body runs.
        "DROP /*!40005 TEMPORARY */ TABLE IF EXISTS `a`",
    ],
)
def test_temporary_tables_are_ddl_without_changes(statement: str) -> None:
    outcome = parse(statement)
    assert outcome.is_ddl
    assert outcome.changes == []


# Names


def test_backticked_names_with_spaces() -> None:
    found = changes("ALTER TABLE `sh op`.`my table` CHANGE `old c` `new c` INT")
    assert [(c.kind, c.table, c.column, c.old_name) for c in found] == [
        (K.RENAME_COLUMN, "sh op.my table", "new c", "old c"),
        (K.MODIFY_COLUMN, "sh op.my table", "new c", None),
    ]


def test_qualified_name_wins_over_default_database() -> None:
    assert one("ALTER TABLE other.t DROP c", database="shop").table == "other.t"
    assert one("ALTER TABLE t DROP c", database="other").table == "other.t"


def test_selection_is_asked_with_database_and_table() -> None:
    asked: list[tuple[str, str]] = []

    def selects(database: str, table: str) -> bool:
        asked.append((database, table))
        return True

    parse("ALTER TABLE `my db`.`my t` DROP c", selects)
    assert asked == [("my db", "my t")]


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE other ADD c INT",
        "ALTER TABLE other ADD COLUMN (a INT, b INT)",
        "TRUNCATE other",
        "DROP TABLE other",
        "CREATE TABLE other (a INT)",
        "CREATE INDEX ix ON other (a)",
        "ALTER TABLE other ENGINE=InnoDB",
        "RENAME TABLE other TO other2",
    ],
)
def test_unselected_tables_give_no_changes(statement: str) -> None:
    outcome = parse(statement, only("shop.t"))
    assert outcome.is_ddl
    assert outcome.changes == []


def test_only_selected_tables_of_a_drop() -> None:
    assert kinds(changes("DROP TABLE a, t, b", only("shop.t"))) == [(K.DROP_TABLE, "shop.t", None)]


# Unparseable DDL


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE u",
        "ALTER TABLE t TRUNCATE PARTITION p0",
        "ALTER TABLE t DROP PARTITION p0, p1",
        "ALTER TABLE t ADD COLUMN c SERIAL",  # the existing rows got numbers
        "ALTER TABLE t ADD PRIMARY KEY IF NOT EXISTS (a)",  # the key only if there was none
        "ALTER TABLE t ADD COLUMN (UNIQUE KEY u (a))",  # a key in a column list
        "ALTER IGNORE TABLE t ADD UNIQUE (a)",
        "ALTER TABLE t ADD PRIMARY KEY (a(10), b DESC)",
        "ALTER TABLE t FROBNICATE",
    ],
)
def test_unparseable_ddl_of_a_selected_table_is_unrecognised(statement: str) -> None:
    change = one(statement)
    assert (change.kind, change.table) == (K.UNRECOGNISED, "shop.t")


def test_unparseable_ddl_without_a_table_is_unrecognised_with_empty_table() -> None:
    change = one("ALTER FROBNICATE t")
    assert (change.kind, change.table) == (K.UNRECOGNISED, "")


def test_mariadb_alter_online_is_read() -> None:
    change = one("ALTER ONLINE TABLE t ADD c INT DEFAULT 1")
    assert (change.kind, change.column, change.default) == (K.ADD_COLUMN, "c", "1")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_sqlglot_fallback_warning_is_silenced_only_while_parsing() -> None:
    import sqlglot

    sqlglot_logger = logging.getLogger("sqlglot")
    handler = _Records()
    sqlglot_logger.addHandler(handler)
    try:
        parse("RENAME TABLE a TO b")
        parse("ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4")
        assert handler.records == []
        sqlglot.parse("RENAME TABLE a TO b", read="mysql")  # anyone else's parse still warns
        assert [r.levelno for r in handler.records] == [logging.WARNING]
    finally:
        sqlglot_logger.removeHandler(handler)


# Not DDL


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN",
        "COMMIT",
        "XA START 'x'",
        "XA END 'x'",
        "SAVEPOINT s",
        "GRANT SELECT ON *.* TO u",
        "CREATE USER u IDENTIFIED BY 'p'",
        "DROP USER u",
        "SET NAMES utf8",
        "FLUSH PRIVILEGES",
        "ANALYZE TABLE t",
        "OPTIMIZE TABLE t",
        "CREATE DATABASE d",
        "DROP DATABASE IF EXISTS d",
        "CREATE SCHEMA d",
        "CREATE VIEW v AS SELECT 1",
        "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW v AS SELECT 1",
        "DROP VIEW v",
        "CREATE DEFINER=`root`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        "DROP TRIGGER tr",
        "CREATE PROCEDURE p() BEGIN SELECT 1; END",
        "DROP PROCEDURE p",
        "CREATE DEFINER=CURRENT_USER FUNCTION f() RETURNS INT RETURN 1",
        "DROP FUNCTION f",
        "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
        "DROP EVENT e",
        "INSERT INTO t VALUES (1)",
        "/*!40101 SET character_set_client = utf8 */",
    ],
)
def test_not_ddl(statement: str) -> None:
    assert parse(statement) == DdlOutcome([], False)


def test_a_create_table_sqlglot_cannot_read_is_still_a_created_table() -> None:
    # Spatial columns and partitions are beyond sqlglot; the body never matters to the sinks.
    assert kinds(changes("CREATE TABLE places (id INT PRIMARY KEY, location POINT)")) == [
        (K.CREATE_TABLE, "shop.places", None)
    ]
    assert kinds(changes("CREATE OR REPLACE TABLE places (id INT PRIMARY KEY, g GEOMETRY)")) == [
        (K.DROP_TABLE, "shop.places", None),
        (K.CREATE_TABLE, "shop.places", None),
    ]


def test_the_statement_kept_for_logs_and_the_dlq_has_no_string_literal_but_the_default_is_read() -> None:
    statement = "ALTER TABLE `it's` ADD COLUMN email VARCHAR(50) DEFAULT 'john@example.com' COMMENT \"who's\""
    change = one(statement)
    assert change.statement == "ALTER TABLE `it's` ADD COLUMN email VARCHAR(50) DEFAULT '?' COMMENT '?'"
    assert (change.kind, change.table, change.column) == (K.ADD_COLUMN, "shop.it's", "email")
    assert (change.has_default, change.default) == (True, "john@example.com")
