"""The code location: `dagster dev -m cdc_pipeline.definitions` or `dagster job execute -m cdc_pipeline.definitions`.

The pipeline config comes from $CDC_PIPELINE_CONFIG (a YAML file).
"""

from __future__ import annotations

from cdc_pipeline.config.loading import load_pipeline_config
from cdc_pipeline.defs.builder import build_definitions

defs = build_definitions(load_pipeline_config())
