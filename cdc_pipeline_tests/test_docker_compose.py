"""docker-compose.yml cannot run here (no Docker engine): parse it and check it against its config."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import yaml

from cdc_pipeline.config.loading import load_pipeline_config
from cdc_pipeline.defs.builder import build_definitions

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_matches_the_pipeline_config_it_ships_with() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = load_pipeline_config(ROOT / "docker" / "pipeline.yaml")
    services = compose["services"]
    assert {"mysql", "cassandra", "clickhouse", "postgres", "dagster-webserver", "dagster-daemon"} <= set(services)
    assert services["cassandra"]["image"].startswith("cassandra:5")
    assert "s/^cdc_enabled: false/cdc_enabled: true/" in " ".join(services["cassandra"]["entrypoint"])
    assert services["postgres"]["image"].startswith("timescale/timescaledb")

    mysql_flags = set(services["mysql"]["command"])
    for flag in (
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--binlog-transaction-compression=OFF",
    ):
        assert flag in mysql_flags
    source = config.sources["shop"]
    assert source.host == "mysql" and str(source.port) == services["mysql"]["ports"][0].split(":")[1]

    # The Cassandra source reads cdc_raw and the node's yaml from the node's data volume.
    cassandra = config.sources["events"]
    assert cassandra.kind == "cassandra" and cassandra.hosts == ["cassandra"]
    node_volume = next(v for v in services["cassandra"]["volumes"] if v.endswith(":/var/lib/cassandra"))
    assert cassandra.cassandra_yaml.startswith("/var/lib/cassandra/")
    node_entrypoint = " ".join(services["cassandra"]["entrypoint"])
    assert "cdc_raw_directory: /var/lib/cassandra/cdc_raw" in node_entrypoint
    assert f"cp /etc/cassandra/cassandra.yaml {cassandra.cassandra_yaml}" in node_entrypoint
    for service in ("dagster-webserver", "dagster-daemon"):
        assert node_volume in services[service]["volumes"], service
        assert services[service]["depends_on"]["cassandra"] == {"condition": "service_healthy"}

    # Every secret the config reads from the environment is provided to the Dagster services.
    wanted = {source.password_env, config.dlq.dsn_env, config.masking.hmac_key_env}
    wanted |= {getattr(sink, "dsn_env", None) for sink in config.sinks.values()} - {None}
    for service in ("dagster-webserver", "dagster-daemon"):
        assert wanted <= set(services[service]["environment"]), service
    dsns = services["dagster-webserver"]["environment"]
    assert re.match(r"http://[^@]+@clickhouse:8123", dsns[config.sinks["warehouse"].dsn_env])
    assert "@postgres:5432/" in dsns[config.sinks["analytics"].dsn_env]

    dagster_yaml = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    assert dagster_yaml["storage"]["postgres"]["postgres_url"]["env"] == "DAGSTER_PG_URL"
    assert "DAGSTER_PG_URL" in services["dagster-daemon"]["environment"]


def test_the_shipped_config_starts_its_sensors_and_a_plain_one_waits_for_an_operator() -> None:
    """docker-compose replicates as soon as the containers are up (`replication.start_sensors`); a
    config that does not say so leaves the sensors and the hourly checks off until switched on."""
    config = load_pipeline_config(ROOT / "docker" / "pipeline.yaml")
    for start, expected in ((True, dg.DefaultSensorStatus.RUNNING), (False, dg.DefaultSensorStatus.STOPPED)):
        replication = config.replication.model_copy(update={"start_sensors": start})
        definitions = build_definitions(config.model_copy(update={"replication": replication}))
        sensors = {sensor.name: sensor.default_status for sensor in definitions.sensors or []}
        assert {"shop_binlog_sensor", "events_commitlog_sensor", "sink_health_sensor"} <= set(sensors), sensors
        assert set(sensors.values()) == {expected}, sensors
        schedule_status = {schedule.default_status for schedule in definitions.schedules or []}
        assert schedule_status == {dg.DefaultScheduleStatus(expected.value)}
    assert config.replication.start_sensors is True
