"""The MySQL/MariaDB source: the binlog read as a replica would, behind the ChangeSource protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cdc_pipeline.config.sources import MySqlSourceConfig
from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.core.positions import SourcePosition
from cdc_pipeline.core.retention import RetentionStatus
from cdc_pipeline.core.schema import TableSchema, split_qualified
from cdc_pipeline.sources.mysql.binlog_reader import BinlogBatchReader
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog, quote_identifier
from cdc_pipeline.sources.mysql.connection import ControlConnection, MySqlConnectionSettings
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.mysql.preflight import (
    SourcePreflightError,
    check_binlog_settings,
    read_binlog_head,
)
from cdc_pipeline.sources.mysql.resume import ResumeBy, resume_point
from cdc_pipeline.sources.mysql.retention import binlog_retention


class MySqlChangeSource:
    log_name = "binlog"

    def __init__(self, name: str, settings: MySqlConnectionSettings, server_id: int, config: MySqlSourceConfig) -> None:
        self._name = name
        self.settings = settings
        self._server_id = server_id
        self._config = config
        self.catalog = MySqlCatalog(settings, config.tables, config.key_columns)
        # Kept for the source's life: a run's idle polls and batches reuse one connection and,
        # while each batch starts where the last ended, one binlog dump.
        self._control = ControlConnection(settings)
        self._reader = BinlogBatchReader(
            name,
            self._control,
            server_id,
            self.catalog,
            compiled_decoder=config.compiled_row_decoder,
            gtid_versions=config.resume_by == "gtid",
            marks_safe=config.marks_safe,
        )

    @property
    def resume_by(self) -> ResumeBy:
        return self._config.resume_by

    def check(self) -> None:
        check_binlog_settings(self.settings, needs_gtid=self._config.resume_by == "gtid")
        self._check_table_selection()

    def _check_table_selection(self) -> None:
        """A selection that takes no table, or names a table the server does not have, is a mistake
        (a typo, the wrong server): refused, as the PostgreSQL source refuses an empty publication,
        rather than a run that succeeds with nothing to replicate."""
        selection = self._config.tables
        selected = self.catalog.selected_names()
        where = f"source '{self._name}' ({self.settings.describe()})"
        present = {f"{database}.{table}" for database, table in selected}
        missing = [name for name in selection.include if not _is_glob(name) and name not in present]
        if missing:
            raise SourcePreflightError(
                f"{where}: sources.{self._name}.tables.include names {', '.join(missing)}, which is not a"
                " base table there (or is excluded); check the name's spelling and case"
            )
        if not selected:
            raise SourcePreflightError(
                f"{where}: no table matches sources.{self._name}.tables (include {selection.include},"
                f" exclude {selection.exclude}); nothing would replicate"
            )

    def high_water_mark(self) -> BinlogPosition:
        return self._control.read(lambda cursor: read_binlog_head(cursor, self.settings.describe()))

    def read_batch(
        self,
        checkpoints: Mapping[str, Checkpoint | None],
        stop_at: SourcePosition | None,
        max_rows: int,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
    ) -> ChangeBatch:
        if stop_at is not None and not isinstance(stop_at, BinlogPosition):
            raise ValueError(f"source '{self._name}' reads a binlog; {stop_at} is not a binlog position")
        start = resume_point(dict(checkpoints), self._control, self._config.resume_by)
        return self._reader.read(
            start, max_rows=max_rows, stop_at=stop_at, max_bytes=max_bytes, max_seconds=max_seconds
        )

    def close(self) -> None:
        self._reader.close()
        self._control.close()

    def has_unread_changes(self) -> None:
        return None  # the binlog position says it: the sensor compares it with the last run's

    def release(self, checkpoints: Mapping[str, Checkpoint | None]) -> None:
        """The server purges binlogs by its own expiry, not by its readers."""

    def table_schema(self, table: str) -> TableSchema | None:
        database, name = split_qualified(table)
        return self.catalog.table(database, name)

    def row_count(self, table: str) -> int:
        database, name = split_qualified(table)
        with self.settings.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {quote_identifier(database)}.{quote_identifier(name)}")
            return int(cursor.fetchone()[0])

    def live_keys(self, schema: TableSchema) -> Iterator[tuple[Any, ...]]:
        return self.catalog.live_keys(schema)

    def log_usage(self) -> dict[str, int | str]:
        return {}

    def retention(self, checkpoints: Mapping[str, Checkpoint | None]) -> RetentionStatus:
        return binlog_retention(self._name, self.settings, self._server_id, checkpoints)


def _is_glob(pattern: str) -> bool:
    return any(character in pattern for character in "*?[")
