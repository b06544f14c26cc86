"""Re-drives dead letters through map and write after a fix, removing those that now succeed.

Payloads in the DLQ are already masked, so a replay delivers them (delivery/steps.py, as replication
does) with the current config, without moving any checkpoint; `_version` keeps a stale replay from
overwriting newer rows (and tombstones keep it from resurrecting deleted ones).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.core.changes import ChangeBatch, Rejection, RowChange, TableChanges
from cdc_pipeline.core.checkpoint import NOT_FROM_THE_LOG_CHECKPOINT
from cdc_pipeline.core.schema import TableSchema
from cdc_pipeline.core.schema_changes import DDL_STAGE, ShapeSource
from cdc_pipeline.delivery.steps import deliver
from cdc_pipeline.dlq.store import DeadLetter, DeadLetterStore
from cdc_pipeline.masking.masker import MASK_NOT_REPLAYABLE, Masker, MaskingError
from cdc_pipeline.sinks.availability import SinkUnavailable
from cdc_pipeline.sinks.base import Sink
from cdc_pipeline.sinks.registry import type_mapper

# Letters stored before they said so themselves (DeadLetter.not_replayable): judged by their stage.
_NOT_REPLAYABLE_STAGES = {"mask": MASK_NOT_REPLAYABLE}


@dataclass
class ReplayResult:
    resolved: int = 0
    still_failing: int = 0
    # Why the letters still fail, counted: the job logs one line per reason, not one per letter.
    failing_reasons: Counter[str] = field(default_factory=Counter)


def _why_not_replayable(letter: DeadLetter) -> str | None:
    return letter.not_replayable or _NOT_REPLAYABLE_STAGES.get(letter.stage)


def _noted(error: str, why_not_replayed: str) -> str:
    """The letter's error with the reason it was not replayed, added once however often it is tried."""
    note = f" [not replayed: {why_not_replayed}]"
    return error if error.endswith(note) else error + note


def replay_dead_letters(
    store: DeadLetterStore,
    pipeline: PipelineConfig,
    sinks: dict[str, Sink],
    schema_of: Callable[[str, str], TableSchema | None],
    masker: Masker,
    warn: Callable[[str], None],
) -> ReplayResult:
    """`schema_of(source, 'db.table')` reads the table's current schema at the source; `warn` hears
    of a sink that is down while it is retried."""
    result = ReplayResult()
    mappers = {name: type_mapper(pipeline, name) for name in sinks}
    groups: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
    for letter in store.pending():
        groups[(letter.source, letter.table)].append(letter)
    resolved: list[int] = []
    failed_again: dict[int, str] = {}
    new_rejections: dict[str, list[Rejection]] = defaultdict(list)

    for (source, table), letters in groups.items():
        statements = [letter for letter in letters if letter.stage == DDL_STAGE]
        letters = [letter for letter in letters if letter.stage != DDL_STAGE]
        holding = _holding_statements(pipeline, source, sinks, statements, resolved, failed_again)
        if holding is not None:
            # The table stays held: its rows wait with the statement.
            for letter in letters:
                failed_again[letter.id] = _noted(letter.error, f"table held by the DDL statement at {holding.position}")
            continue
        replayable = [letter for letter in letters if _why_not_replayable(letter) is None]
        for letter in letters:
            why_not = _why_not_replayable(letter)
            if why_not is not None:
                failed_again[letter.id] = _noted(letter.error, why_not)
        for letter in replayable:
            if letter.sink and letter.sink not in sinks:
                failed_again[letter.id] = _noted(letter.error, f"sink '{letter.sink}' is not configured")
        replayable = [letter for letter in replayable if not letter.sink or letter.sink in sinks]
        if not replayable:
            continue
        schema = _masked_schema_or_problem(source, table, schema_of, masker)
        if isinstance(schema, str):
            failed_again.update({letter.id: schema for letter in replayable})
            continue
        # sink -> letter id -> the rejection it met there again
        outcome: dict[str, dict[int, Rejection]] = {}
        for sink_name, sink in sinks.items():
            targeted = [letter for letter in replayable if letter.sink in ("", sink_name)]
            if not targeted:
                continue
            batch, letter_of = _batch_of(source, pipeline.sources[source].table_owner(source), schema, targeted)
            refused: list[Rejection] = []
            delivery = deliver(
                sink, mappers[sink_name], batch, refused.extend, pipeline.sink_outages, warn, advance_checkpoint=False
            )
            if delivery.unavailable is not None:
                # Nothing is resolved for a sink that took nothing: the replay fails and is run again.
                raise SinkUnavailable(sink_name, delivery.unavailable)
            # A rejection carries its change's own values dict: that identifies the letter exactly.
            outcome[sink_name] = {letter_of[id(r.payload)].id: r for r in refused}
        for letter in replayable:
            failures = {
                name: failed[letter.id]
                for name, failed in outcome.items()
                if letter.sink in ("", name) and letter.id in failed
            }
            if not failures:
                resolved.append(letter.id)
            elif letter.sink:
                failed_again[letter.id] = failures[letter.sink].error
            else:
                # It now fails in fewer sinks, or differently: keep one sink-specific letter per failure.
                new_rejections[source].extend(failures.values())
                resolved.append(letter.id)

    for source, rejections in new_rejections.items():
        store.record(source, rejections)
    store.resolve(resolved)
    store.mark_failed_again(failed_again)
    result.resolved = len(resolved)
    result.failing_reasons.update(failed_again.values())
    result.failing_reasons.update(r.error for rejections in new_rejections.values() for r in rejections)
    result.still_failing = result.failing_reasons.total()
    return result


def _holding_statements(
    pipeline: PipelineConfig,
    source: str,
    sinks: dict[str, Sink],
    statements: list[DeadLetter],
    resolved: list[int],
    failed_again: dict[int, str],
) -> DeadLetter | None:
    """Release the held DDL statements the source's config now marks safe, in every sink; the first
    one still holding the table, if any."""
    config = pipeline.sources.get(source)
    holding = None
    for letter in statements:
        statement = str(letter.values.get("statement", ""))
        if config is None or not config.marks_safe(statement):
            failed_again[letter.id] = _noted(letter.error, f"no pattern in sources.{source}.safe_statements matches it")
            holding = holding or letter
            continue
        try:
            for sink in sinks.values():
                sink.release_schema_hold(source, letter.table)
        except SinkUnavailable as down:
            # Released nowhere for sure: the letter stays, and the next replay tries again.
            failed_again[letter.id] = _noted(letter.error, f"could not release the hold: {down}")
            holding = holding or letter
            continue
        resolved.append(letter.id)
    return holding


def _masked_schema_or_problem(
    source: str, table: str, schema_of: Callable[[str, str], TableSchema | None], masker: Masker
) -> TableSchema | str:
    schema = schema_of(source, table)
    if schema is None:
        return f"table {table} no longer exists at source {source}"
    if not schema.key_columns:
        return f"table {table} still has no primary key and no key_columns in the config"
    try:
        return masker.masked_schema(schema)
    except MaskingError as error:
        return str(error)


def _batch_of(
    source: str, owner: str, schema: TableSchema, letters: list[DeadLetter]
) -> tuple[ChangeBatch, dict[int, DeadLetter]]:
    """The letters as a masked batch, and which letter each change's values dict came from."""
    names = set(schema.column_names)
    changes = []
    letter_of: dict[int, DeadLetter] = {}
    for letter in sorted(letters, key=lambda letter: letter.version):
        # Payloads are masked already; only columns that still exist are replayed.
        if schema.merges_cells:
            # A cell change holds only the columns it wrote: absent ones are not nulls.
            values = {column: value for column, value in letter.values.items() if column in names}
        else:
            values = {column: letter.values.get(column) for column in schema.column_names if column in names}
        changes.append(RowChange(letter.op, values, letter.version, letter.position, 0, letter.cells))
        letter_of[id(values)] = letter
    # Replays never move a checkpoint: the batch's bounds are not from the log (each change keeps its position).
    position = NOT_FROM_THE_LOG_CHECKPOINT
    # The current schema may be ahead of the sink table (or behind a refused change): a replay only
    # adds the columns the sink lacks, it never drops or retypes one.
    tables = {schema.qualified_name: TableChanges(schema, changes, ShapeSource.REPLAY)}
    batch = ChangeBatch(source, position, position, tables, masked=True, table_owner=owner)
    return batch, letter_of
