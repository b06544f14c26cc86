"""The DLQ's counts as Dagster metadata, for the asset and for the runs that add or replay letters."""

import dagster as dg

from cdc_pipeline.dlq.store import DeadLetterStore


def dead_letter_metadata(store: DeadLetterStore) -> dict[str, dg.MetadataValue]:
    counts = store.counts()
    lines = ["| table | sink | stage | reason | replayable | count |", "|---|---|---|---|---|---|"]
    for c in counts:
        replayable = "yes, once fixed" if c.not_replayable is None else f"no: {_cell(c.not_replayable)}"
        lines.append(f"| {c.table} | {c.sink or 'all'} | {c.stage} | {_cell(c.error)} | {replayable} | {c.count} |")
    by_table: dict[str, int] = {}
    for c in counts:
        by_table[c.table] = by_table.get(c.table, 0) + c.count
    return {
        "dead_letters": dg.MetadataValue.int(sum(c.count for c in counts)),
        # Letters a replay cannot redo (see the reason table): an operator re-syncs their tables instead.
        "not_replayable": dg.MetadataValue.int(sum(c.count for c in counts if c.not_replayable is not None)),
        "by_table": dg.MetadataValue.json(by_table),
        "by_reason": dg.MetadataValue.md("\n".join(lines)),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
