"""Start-up checks: the binlog must carry full row images with their metadata, uncompressed."""

from __future__ import annotations

import pymysql
from pymysql.cursors import Cursor

from cdc_pipeline.sources.mysql.connection import MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition

# variable -> value the reader needs, and why
_REQUIRED = {
    "log_bin": ("ON", "the server must write a binary log"),
    "binlog_format": ("ROW", "statement-based events carry no row values"),
    "binlog_row_image": ("FULL", "MINIMAL/NOBLOB images lose columns the sinks need"),
    "binlog_row_metadata": ("FULL", "column names and signedness come from the row metadata"),
}
# Compressed events are skipped by mysql-replication without a word, which would lose rows.
_MUST_BE_OFF = {
    "log_bin_compress": "MariaDB compressed binlog events cannot be decoded",
    "binlog_transaction_compression": "MySQL compressed transaction payloads cannot be decoded",
}


class SourcePreflightError(RuntimeError):
    """The source server is not configured for row-based change capture."""


def check_binlog_settings(settings: MySqlConnectionSettings, needs_gtid: bool = False) -> None:
    names = list(_REQUIRED) + list(_MUST_BE_OFF)
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES"
            " WHERE VARIABLE_NAME IN (" + ",".join(["%s"] * len(names)) + ")",
            [name.upper() for name in names],
        )
        found = {str(name).lower(): str(value).upper() for name, value in cursor.fetchall()}
    problems = []
    for variable, (expected, why) in _REQUIRED.items():
        actual = found.get(variable)
        if actual != expected:
            problems.append(f"{variable}={actual or '(not set)'}, expected {expected}: {why}")
    for variable, why in _MUST_BE_OFF.items():
        if found.get(variable, "OFF") != "OFF":
            problems.append(f"{variable}={found[variable]}, expected OFF: {why}")
    if needs_gtid:
        with settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
        if "mariadb" not in version.lower():
            problems.append(f"resume_by: gtid needs a MariaDB server (MariaDB GTIDs); this is {version}")
    if problems:
        raise SourcePreflightError(
            f"source {settings.describe()} cannot be replicated:\n  - " + "\n  - ".join(problems)
        )


def current_binlog_position(settings: MySqlConnectionSettings) -> BinlogPosition:
    """The high-water mark: where the server will write its next event."""
    with settings.connect() as connection, connection.cursor() as cursor:
        return read_binlog_head(cursor, settings.describe())


def read_binlog_head(cursor: Cursor, server: str) -> BinlogPosition:
    """current_binlog_position on a connection the caller keeps (`server` names it in errors)."""
    try:
        cursor.execute("SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:
        # MySQL 8.4 removed SHOW MASTER STATUS in favour of SHOW BINARY LOG STATUS (8.2+).
        cursor.execute("SHOW BINARY LOG STATUS")
    row = cursor.fetchone()
    if row is None:
        raise SourcePreflightError(f"source {server}: SHOW MASTER STATUS is empty; is log_bin on?")
    return BinlogPosition(str(row[0]), int(row[1]))


def read_server_id(cursor: Cursor) -> int:
    cursor.execute("SELECT @@server_id")
    return int(cursor.fetchone()[0])


def oldest_binlog_position(settings: MySqlConnectionSettings) -> BinlogPosition:
    """Where a reader with no checkpoint starts: the first event of the oldest binlog still kept."""
    with settings.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        rows = cursor.fetchall()
    if not rows:
        raise SourcePreflightError(f"source {settings.describe()}: SHOW BINARY LOGS is empty; is log_bin on?")
    return BinlogPosition(str(rows[0][0]), 4)
