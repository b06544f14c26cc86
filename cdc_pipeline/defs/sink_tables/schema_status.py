"""Whether a sink table follows its source's shape: the `schema_status` metadata and its check.

A sink that cannot take a table's schema change safely holds the table: its rows go to the DLQ
(stage "schema") while the other tables flow (sinks/schema_sync/). The write step shows the hold
in the table's materialization metadata; this check fails while the table's held rows wait in the
DLQ, and passes again once an operator's fix let the DLQ replay write them. A DDL statement the
pipeline could not read holds its table in every sink the same way (its letter has stage "ddl").
"""

import dagster as dg

from cdc_pipeline.core.schema_changes import DDL_STAGE, SCHEMA_STAGE
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE
from cdc_pipeline.defs.resources import dead_letter_store_of

SCHEMA_STATUS = "schema_status"
IN_SYNC = "in sync"
HELD = "held"


def build_schema_check(source_name: str, table: str, sink_name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name="schema_in_sync",
        required_resource_keys={DEAD_LETTER_QUEUE},
        description=(
            "The sink took every schema change of the table: no rows are held in the DLQ for a change it"
            " could not apply (a narrowing, a type with no mapping). Fix with a type override or a re-sync,"
            " then replay the DLQ."
        ),
    )
    def schema_in_sync(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        store = dead_letter_store_of(context.resources)
        held, reason = store.count_for(source_name, table, sink_name, (SCHEMA_STAGE, DDL_STAGE))
        return dg.AssetCheckResult(
            passed=held == 0,
            metadata={"held_rows": held, **({"reason": reason} if reason else {})},
        )

    return schema_in_sync
