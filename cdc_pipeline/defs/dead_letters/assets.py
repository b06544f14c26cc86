"""The DLQ as an asset: its metadata counts dead letters by table, sink, stage and reason."""

import dagster as dg

from cdc_pipeline.defs.asset_keys import DEAD_LETTER_QUEUE_KEY
from cdc_pipeline.defs.dead_letters.metadata import dead_letter_metadata
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE
from cdc_pipeline.defs.resources import dead_letter_store_of


@dg.asset(
    key=DEAD_LETTER_QUEUE_KEY,
    required_resource_keys={DEAD_LETTER_QUEUE},
    group_name="dead_letters",
    kinds={"postgres"},
    description=(
        "Events that could not be parsed, masked, mapped or written, kept masked with stage, error and position."
    ),
)
def dead_letter_queue(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=dead_letter_metadata(dead_letter_store_of(context.resources)))


@dg.asset_check(asset=dead_letter_queue, required_resource_keys={DEAD_LETTER_QUEUE}, name="dead_letter_queue_is_empty")
def dead_letter_queue_is_empty(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metadata = dead_letter_metadata(dead_letter_store_of(context.resources))
    count = metadata["dead_letters"].value
    return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
