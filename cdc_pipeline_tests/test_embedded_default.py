"""The embedded default (README command 1): PostgreSQL source by logical decoding, chdb and PostgreSQL sinks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_loads_the_shop_replicates_its_changes_and_every_check_passes(tmp_path: Path) -> None:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "DAGSTER_"))}
    completed = subprocess.run(
        [sys.executable, "-m", "cdc_pipeline.demo", "--rounds", "3", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert out.count("succeeded") == 3, out
    # One line per table: rows at the source, in ClickHouse, in PostgreSQL.
    counts = re.findall(r"^(customers|orders|payments)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.MULTILINE)
    assert [table for table, *_ in counts] == ["customers", "orders", "payments"], out
    assert all(source == clickhouse == postgres and int(source) > 0 for _, source, clickhouse, postgres in counts)
    verdicts = re.findall(r"^check (\S+) (\S+): (passed|FAILED)$", out, re.MULTILINE)
    assert verdicts and {verdict for *_, verdict in verdicts} == {"passed"}, out
    # Every sink table (3 tables x 2 sinks) ran the same checks, the DLQ its own.
    by_asset: dict[str, set[str]] = {}
    for asset, check, _ in verdicts:
        by_asset.setdefault(asset, set()).add(check)
    tables = [asset for asset in by_asset if "/" in asset]
    assert len(tables) == 6 and by_asset["dead_letter_queue"] == {"dead_letter_queue_is_empty"}, out
    assert all(by_asset[asset] == by_asset[tables[0]] for asset in tables), by_asset
    assert {"row_count_matches_source", "keys_match_source", "versions_match_other_sinks"} <= by_asset[tables[0]]
    # The servers stop with the demo: nothing keeps running on its data directory.
    running = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "data") not in running
