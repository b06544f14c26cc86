"""What the pipeline needs from the node's cassandra.yaml: where cdc_raw is, and how much it may hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


class NodeConfigError(ValueError):
    """The node's cassandra.yaml is missing, unreadable, or not set up for CDC; the message names the key."""


@dataclass(frozen=True)
class CassandraNodeConfig:
    yaml_path: Path
    cdc_raw_dir: Path
    cdc_enabled: bool
    # As written in the yaml (e.g. "4096MiB"); Cassandra's default is the smaller of 4 GiB and 1/8 of the volume.
    cdc_total_space: str


def read_node_config(yaml_path: Path, config_key: str) -> CassandraNodeConfig:
    """`config_key` names the pipeline setting that gave the path (for the error messages)."""
    if not yaml_path.is_file():
        raise NodeConfigError(f"{config_key}: {yaml_path} is not a file (the node's cassandra.yaml is expected)")
    try:
        settings = yaml.safe_load(yaml_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise NodeConfigError(f"{config_key}: {yaml_path} cannot be read as YAML: {error}") from None
    if not isinstance(settings, dict):
        raise NodeConfigError(f"{config_key}: {yaml_path} does not hold a mapping of settings")
    cdc_raw = settings.get("cdc_raw_directory")
    # Cassandra's default: <cassandra home>/data/cdc_raw, the yaml sitting in <cassandra home>/conf.
    cdc_raw_dir = Path(cdc_raw) if cdc_raw else yaml_path.resolve().parent.parent / "data" / "cdc_raw"
    total = settings.get("cdc_total_space") or settings.get("cdc_total_space_in_mb")
    return CassandraNodeConfig(
        yaml_path=yaml_path,
        cdc_raw_dir=cdc_raw_dir,
        cdc_enabled=bool(settings.get("cdc_enabled", False)),
        cdc_total_space=str(total) if total is not None else "default (min(4096MiB, 1/8 of the volume))",
    )
