"""The embedded default's code location: `dagster dev -m cdc_pipeline.embedded.definitions`.

Importing it starts (or attaches to) the embedded servers under $CDC_EMBEDDED_DATA (default
./.cdc_data) and creates the shop if it is not there yet; the replication and activity sensors
start running with the location.
"""

import dagster as dg

from cdc_pipeline.defs.builder import build_definitions
from cdc_pipeline.embedded.activity import activity_definitions
from cdc_pipeline.embedded.environment import EmbeddedEnvironment

environment = EmbeddedEnvironment.open()
environment.ensure_shop()

defs = dg.Definitions.merge(build_definitions(environment.pipeline(), sensors_running=True), activity_definitions())
