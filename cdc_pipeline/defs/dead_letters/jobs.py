"""The replay job: re-drives dead letters through map and write after a config or mapping fix."""

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.defs.asset_keys import DEAD_LETTER_QUEUE_KEY
from cdc_pipeline.defs.dead_letters.metadata import dead_letter_metadata
from cdc_pipeline.defs.resource_keys import DEAD_LETTER_QUEUE, MASKING, sink_key, source_key
from cdc_pipeline.defs.resources import dead_letter_store_of, masker_of, open_change_source, sinks_of
from cdc_pipeline.defs.run_tags import embedded_clickhouse_tags
from cdc_pipeline.dlq.replay import replay_dead_letters

REPLAY_JOB_NAME = "replay_dead_letters"


def build_replay_job(pipeline: PipelineConfig) -> dg.JobDefinition:
    @dg.op(
        name="replay_dead_letters_op",
        required_resource_keys={
            DEAD_LETTER_QUEUE,
            MASKING,
            *map(sink_key, pipeline.sinks),
            *map(source_key, pipeline.sources),
        },
    )
    def replay(context: dg.OpExecutionContext) -> None:
        store = dead_letter_store_of(context.resources)
        sinks = sinks_of(context.resources, pipeline.sinks)
        # Through the ChangeSource protocol: every source kind (MySQL, PostgreSQL, Cassandra) answers it.
        sources = {name: open_change_source(context.resources, name, pipeline) for name in pipeline.sources}

        def schema_of(source: str, table: str):  # type: ignore[no-untyped-def]
            return sources[source].table_schema(table) if source in sources else None

        masker = masker_of(context.resources, pipeline)
        try:
            result = replay_dead_letters(store, pipeline, sinks, schema_of, masker, context.log.warning)
        finally:
            for source in sources.values():
                source.close()
        context.log.info(f"replayed dead letters: {result.resolved} resolved, {result.still_failing} still failing")
        for reason, count in result.failing_reasons.most_common():
            context.log.warning(f"{count} dead letter(s) still failing: {reason}")
        context.log_event(
            dg.AssetMaterialization(asset_key=DEAD_LETTER_QUEUE_KEY, metadata=dead_letter_metadata(store))
        )

    @dg.job(
        name=REPLAY_JOB_NAME,
        executor_def=dg.in_process_executor,
        description="Re-drives the DLQ with the current config; removes the dead letters that now succeed.",
        tags=embedded_clickhouse_tags(pipeline),
    )
    def replay_job() -> None:
        replay()

    return replay_job
