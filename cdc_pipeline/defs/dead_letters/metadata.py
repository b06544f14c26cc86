"""The DLQ's counts as Dagster metadata, for the asset and for the runs that add or replay letters."""

import dagster as dg

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
