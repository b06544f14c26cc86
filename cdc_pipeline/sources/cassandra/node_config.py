"""What the pipeline needs from the node's cassandra.yaml: where cdc_raw is, and how much it may hold."""

from __future__ import annotations

import re
import shutil
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
    # The same in bytes: at this much in cdc_raw the node refuses writes to CDC tables.
    cdc_total_space_bytes: int


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_DEFAULT_TOTAL = 4096 * 1024**2


def _total_space_bytes(settings: dict[str, object], cdc_raw_dir: Path, yaml_path: Path) -> int:
    if settings.get("cdc_total_space") is not None:
        text = str(settings["cdc_total_space"]).strip()
        match = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB)", text)
        if match is None:
            raise NodeConfigError(
                f"cdc_total_space in {yaml_path} is {text!r}; expected a number with B, KiB, MiB or GiB"
            )
        return int(match.group(1)) * _UNITS[match.group(2)]
    if settings.get("cdc_total_space_in_mb") is not None:  # the pre-4.1 name, in MiB
        return int(str(settings["cdc_total_space_in_mb"])) * 1024**2
    # Cassandra's default: the smaller of 4 GiB and an eighth of cdc_raw's volume.
    existing = next((p for p in (cdc_raw_dir, *cdc_raw_dir.parents) if p.exists()), Path("/"))
    return min(_DEFAULT_TOTAL, shutil.disk_usage(existing).total // 8)


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
        cdc_total_space_bytes=_total_space_bytes(settings, cdc_raw_dir, yaml_path),
    )
