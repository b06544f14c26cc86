"""Reading the pipeline YAML and turning validation failures into one readable error."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from cdc_pipeline.config.base import config_models, kind_of
from cdc_pipeline.config.models import PipelineConfig
from cdc_pipeline.config.sources import SourceConfig

CONFIG_PATH_ENV = "CDC_PIPELINE_CONFIG"
_SOURCE_KIND_TAGS = frozenset(kind_of(model) for model in config_models(SourceConfig))


class PipelineConfigError(ValueError):
    """The pipeline configuration cannot be used; the message names the file and the keys at fault."""


def _key_path(location: tuple[int | str, ...]) -> str:
    parts = list(location)
    # pydantic puts the union member's tag into the path (sources.shop.mysql.port): the YAML has no such key.
    # (Sinks are validated by kind without a union: config/sinks.py.)
    if len(parts) > 2 and parts[0] == "sources" and parts[2] in _SOURCE_KIND_TAGS:
        del parts[2]
    return ".".join(str(part) for part in parts) or "(top level)"


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid pipeline config {source}:"]
    for problem in error.errors():
        location = _key_path(problem["loc"])
        lines.append(f"  - {location}: {problem['msg']}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word: two `analytics:` sinks would silently
    become one. This loader refuses a mapping that repeats a key, naming it and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {seen[key]} and {line}): the second would"
                    " silently replace the first",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_pipeline_config(text: str, source: str = "<string>") -> PipelineConfig:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise PipelineConfigError(f"pipeline config {source} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PipelineConfigError(f"pipeline config {source} must be a mapping at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise PipelineConfigError(_describe(error, source)) from None


def load_pipeline_config(path: str | Path | None = None) -> PipelineConfig:
    """Load from `path`, or from the file named by $CDC_PIPELINE_CONFIG."""
    if path is None:
        path = os.environ.get(CONFIG_PATH_ENV)
        if not path:
            raise PipelineConfigError(f"no pipeline config: set {CONFIG_PATH_ENV} to the YAML file's path")
    file = Path(path)
    if not file.is_file():
        raise PipelineConfigError(f"pipeline config file {file} does not exist")
    return parse_pipeline_config(file.read_text(encoding="utf-8"), source=str(file))
