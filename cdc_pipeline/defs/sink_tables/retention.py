"""The `source_log_retained` asset check: is the change log from this sink's checkpoint on still at the
source, and for how long?

The source's log is the pipeline's write-ahead log. The check passes while the sink's checkpoint is
far from what the source purges; it warns (WARN severity) when it comes within the configured
`retention` thresholds, and fails (ERROR) once the range after the checkpoint is gone, naming it:
the next run refuses to skip it, and the sink needs a re-sync.

(No `from __future__ import annotations` here: Dagster inspects the context parameter's annotation
as a type, and a string there is refused.)
"""

from dataclasses import dataclass

import dagster as dg

from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sources import RetentionConfig
from cdc_pipeline.core.retention import RetentionStatus, SinkRetention
from cdc_pipeline.defs.asset_keys import sink_table_asset_key
from cdc_pipeline.defs.resource_keys import sink_key, source_key
from cdc_pipeline.defs.resources import change_source_of, sink_of

CHECK_NAME = "source_log_retained"


@dataclass(frozen=True)
class RetentionVerdict:
    passed: bool
    severity: dg.AssetCheckSeverity
    reasons: list[str]


def assess(status: RetentionStatus, sink: SinkRetention, thresholds: RetentionConfig) -> RetentionVerdict:
    """Lost: ERROR. Within a threshold, or a risk the source flags: WARN. Otherwise it passes."""
    if sink.lost is not None:
        return RetentionVerdict(
            False,
            dg.AssetCheckSeverity.ERROR,
            [
                f"source '{status.source}' no longer keeps the changes after sink '{sink.sink}' checkpoint"
                f" {sink.checkpoint}: {sink.lost} is lost (oldest kept: {status.oldest_kept}); re-sync the sink"
            ],
        )
    reasons = []
    if sink.at_risk is not None:
        reasons.append(sink.at_risk)
    if sink.seconds_left is not None and sink.seconds_left < thresholds.warn_when_hours_left * 3600:
        reasons.append(
            f"the source may purge the log at sink '{sink.sink}' checkpoint {sink.checkpoint or '(none yet)'} in"
            f" {sink.seconds_left / 3600:.2f} h (warn_when_hours_left: {thresholds.warn_when_hours_left:g})"
        )
    if sink.percent_used is not None and sink.percent_used >= thresholds.warn_when_percent_used:
        reasons.append(
            f"the log the source keeps for the sinks is {sink.percent_used:g}% of its limit"
            f" (warn_when_percent_used: {thresholds.warn_when_percent_used:g})"
        )
    if reasons:
        return RetentionVerdict(False, dg.AssetCheckSeverity.WARN, reasons)
    return RetentionVerdict(True, dg.AssetCheckSeverity.WARN, [])


def build_retention_check(
    source_name: str, table: str, sink_name: str, pipeline: PipelineConfig
) -> dg.AssetChecksDefinition:
    thresholds = pipeline.retention_of(source_name)

    @dg.asset_check(
        asset=sink_table_asset_key(sink_name, table),
        name=CHECK_NAME,
        required_resource_keys={source_key(source_name), sink_key(sink_name)},
        description="The source still keeps its change log from this sink's checkpoint on, and not just barely"
        " (binlog expiry, replication slot WAL limit, cdc_raw space).",
    )
    def source_log_retained(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with change_source_of(context.resources, source_name, pipeline) as source:
            checkpoint = sink_of(context.resources, sink_name).checkpoint(source_name)
            status = source.retention({sink_name: checkpoint})
            mine = status.sinks[sink_name]
            verdict = assess(status, mine, thresholds)
            return dg.AssetCheckResult(
                passed=verdict.passed,
                severity=verdict.severity,
                description="; ".join(verdict.reasons) or None,
                metadata={
                    "source": source_name,
                    "oldest_kept": status.oldest_kept,
                    **status.log,
                    **mine.as_metadata(),
                    "warn_when_hours_left": thresholds.warn_when_hours_left,
                    "warn_when_percent_used": thresholds.warn_when_percent_used,
                },
            )

    return source_log_retained
