"""The code location loads the way `dagster dev` and the daemon load it, and dagster.yaml is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from cdc_pipeline_tests.harness import PipelineHarness

ROOT = Path(__file__).resolve().parents[1]


def test_workspace_loads_the_definitions_from_the_configured_pipeline(harness: PipelineHarness, tmp_path: Path) -> None:
    env = {**os.environ, "CDC_PIPELINE_CONFIG": str(harness.write_config_file()), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    validated = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "Validation successful for code location cdc_pipeline.definitions" in validated.stdout + validated.stderr


def test_a_missing_config_fails_the_code_location_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CDC_PIPELINE_CONFIG"}
    dagster = Path(sys.executable).parent / "dagster"
    validated = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "cdc_pipeline.definitions"],
        cwd=tmp_path,
        env={**env, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validated.returncode != 0
    assert "set CDC_PIPELINE_CONFIG to the YAML file's path" in validated.stdout + validated.stderr


def test_the_instance_settings_load_and_limit_runs_per_source(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits  # type: ignore[attr-defined]
    assert {"key": "cdc/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert {"key": "cdc/chdb", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
