"""The DLQ as an asset: its metadata counts dead letters by table, sink, stage and reason."""


import dagster as dg

from cdc_pipeline.defs.replication.ops import dead_letter_asset_key
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE
from cdc_pipeline.dlq.store import DeadLetterStore


def dead_letter_metadata(store: DeadLetterStore) -> dict[str, dg.MetadataValue]:
    counts = store.counts()
    lines = ["| table | sink | stage | reason | count |", "|---|---|---|---|---|"]
    for table, sink, stage, error, count in counts:
        reason = error.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {table} | {sink or 'all'} | {stage} | {reason} | {count} |")
    by_table: dict[str, int] = {}
    for table, _, _, _, count in counts:
        by_table[table] = by_table.get(table, 0) + count
    return {
        "dead_letters": dg.MetadataValue.int(sum(c[-1] for c in counts)),
        "by_table": dg.MetadataValue.json(by_table),
        "by_reason": dg.MetadataValue.md("\n".join(lines)),
    }


@dg.asset(
    key=dead_letter_asset_key(),
    required_resource_keys={DEAD_LETTER_QUEUE},
    group_name="dead_letters",
    kinds={"postgres"},
    description="Events that could not be parsed, masked, mapped or written, kept masked with stage, error and position.",
)
def dead_letter_queue(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=dead_letter_metadata(getattr(context.resources, DEAD_LETTER_QUEUE).store()))


@dg.asset_check(asset=dead_letter_queue, required_resource_keys={DEAD_LETTER_QUEUE}, name="dead_letter_queue_is_empty")
def dead_letter_queue_is_empty(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metadata = dead_letter_metadata(getattr(context.resources, DEAD_LETTER_QUEUE).store())
    count = metadata["dead_letters"].value
    return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
