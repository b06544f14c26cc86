"""Whether a sink took the last batch, kept where the UI and the freshness check read it.

A sink that is unavailable for a run (see sinks/availability.py) gets an AssetObservation on each of
its tables' assets: `sink_status` "unavailable since <time>: <reason>", the checkpoint it stays at,
and the position the others reached. The first run that writes it again observes "available". The
Dagster instance holds these events: it is there whenever a run or a check is (a status table in
the sink, or in the DLQ database that deployments often put on the sink's server, would go down
with the sink it describes), and the asset's page shows them without anything else to query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

STATUS = "sink_status"
AVAILABLE = "available"
UNAVAILABLE_SINCE = "unavailable_since"
REASON = "reason"


@dataclass(frozen=True)
class ObservedStatus:
    available: bool
    unavailable_since: float | None
    reason: str | None
    observed_at: float


def unavailable_status(since: float, reason: str) -> str:
    return f"unavailable since {dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec='seconds')}: {reason}"


def latest_status(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> ObservedStatus | None:
    """The newest sink status observed for the asset (None: never observed, i.e. never down)."""
    records = instance.fetch_observations(asset_key, limit=1).records
    if not records:
        return None
    record = records[0]
    observation = record.asset_observation
    if observation is None or STATUS not in observation.metadata:
        return None
    metadata = {key: value.value for key, value in observation.metadata.items()}
    status = str(metadata[STATUS])
    since = metadata.get(UNAVAILABLE_SINCE)
    reason = metadata.get(REASON)
    return ObservedStatus(
        available=status == AVAILABLE,
        unavailable_since=float(since) if isinstance(since, (int, float)) else None,
        reason=str(reason) if reason is not None else None,
        observed_at=record.timestamp,
    )


def observe_unavailable(
    context: dg.OpExecutionContext,
    asset_keys: Iterable[dg.AssetKey],
    reason: str,
    now: float,
    metadata: dict[str, dg.RawMetadataValue],
) -> float:
    """Record the outage on every asset; returns when it began (the first run that found the sink down)."""
    keys = list(asset_keys)
    since = now
    for key in keys:
        previous = latest_status(context.instance, key)
        if previous is not None and not previous.available and previous.unavailable_since is not None:
            since = min(since, previous.unavailable_since)
    for key in keys:
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                metadata={
                    STATUS: unavailable_status(since, reason),
                    UNAVAILABLE_SINCE: dg.MetadataValue.timestamp(since),
                    REASON: reason,
                    **metadata,
                },
            )
        )
    return since


def observe_recovery(context: dg.OpExecutionContext, asset_keys: Iterable[dg.AssetKey], now: float) -> int:
    """After an outage, mark the assets whose last status was "unavailable" available again; returns how many."""
    recovered = 0
    for key in asset_keys:
        previous = latest_status(context.instance, key)
        if previous is None or previous.available:
            continue
        down_for = now - previous.unavailable_since if previous.unavailable_since is not None else None
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                metadata={STATUS: AVAILABLE, **({"was_down_seconds": round(down_for, 1)} if down_for else {})},
            )
        )
        recovered += 1
    return recovered
