"""The compiled row decoder gives exactly what mysql-replication (with the reader's fixes) gives."""

from __future__ import annotations

from cdc_pipeline.config.sources import TableSelection
from cdc_pipeline.core.changes import ChangeBatch
from cdc_pipeline.core.checkpoint import Checkpoint
from cdc_pipeline.sources.mysql.binlog_reader import BinlogBatchReader
from cdc_pipeline.sources.mysql.catalog import MySqlCatalog
from cdc_pipeline.sources.mysql.connection import ControlConnection
from cdc_pipeline.sources.mysql.positions import BinlogPosition
from cdc_pipeline.sources.mysql.preflight import current_binlog_position
from cdc_pipeline.sources.mysql.row_decoder import CompiledRowDecoder
from cdc_pipeline_tests.harness import PipelineHarness
from cdc_pipeline_tests.test_end_to_end import ALL_TYPES_TABLE, ROWS


def _read(harness: PipelineHarness, compiled: bool, start: BinlogPosition) -> ChangeBatch:
    catalog = MySqlCatalog(harness.mariadb.settings, TableSelection(include=[f"{harness.database}.*"]))
    control = ControlConnection(harness.mariadb.settings)
    reader = BinlogBatchReader("shop", control, 777, catalog, compiled_decoder=compiled)
    try:
        return reader.read(Checkpoint(start), max_rows=10**6)
    finally:
        reader.close()
        control.close()


def test_compiled_decoder_equals_the_library_on_every_type_and_change_kind(harness: PipelineHarness) -> None:
    start = current_binlog_position(harness.mariadb.settings)
    harness.source_execute(
        ALL_TYPES_TABLE,
        "INSERT INTO all_types VALUES " + ", ".join(ROWS),
        "UPDATE all_types SET vc = 'changed', tm6 = '-01:02:03.456789', d65 = -d65 WHERE id IN (0, 2)",
        "UPDATE all_types SET id = 5 WHERE id = 1",
        "DELETE FROM all_types WHERE id = 18446744073709551615",
        "CREATE TABLE decimals (id INT PRIMARY KEY, a DECIMAL(1,0), b DECIMAL(9,9), c DECIMAL(18,9), d DECIMAL(10,4), e DECIMAL(30,0))",
        "INSERT INTO decimals VALUES (1, 9, 0.999999999, -123456789.123456789, -0.0001, -123456789012345678901234567890),"
        " (2, -9, -0.000000001, 0, 999999.9999, 0), (3, 0, 0, 1, -999999.9999, 1)",
    )
    compiled, library = _read(harness, True, start), _read(harness, False, start)
    assert compiled.end == library.end
    assert compiled.tables.keys() == library.tables.keys() and len(compiled.tables) == 2
    for table, changes in compiled.tables.items():
        expected = library.tables[table].changes
        assert len(changes.changes) == len(expected) > 0
        for got, want in zip(changes.changes, expected, strict=False):
            assert (got.op, got.version, got.position) == (want.op, want.version, want.position)
            assert got.values == want.values, {
                k: (v, want.values[k]) for k, v in got.values.items() if v != want.values[k]
            }


def test_tables_the_decoder_does_not_know_fall_back_to_the_library(harness: PipelineHarness) -> None:
    class Column:  # the shape of a table-map column, for a type the compiled decoder refuses
        name, type, unsigned = "id", 245, False  # 245: MySQL's binary JSON

    catalog = MySqlCatalog(harness.mariadb.settings, TableSelection())
    harness.source_execute("CREATE TABLE j (id INT PRIMARY KEY)")
    schema = catalog.table(harness.database, "j")
    assert schema is not None
    assert CompiledRowDecoder.compile([Column()], schema) is None
