"""What every config model builds on: the strict model base, the pattern a name in the YAML must match,
the type of a field that holds an environment variable's name, and the helpers that list the per-kind
models of the sources' kind union (`SourceConfig`) and the kind a model answers to.

Shared by the pipeline-level models (models.py) and the source and sink kinds' models (sources.py,
sinks.py), which is why the names here are public.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

EnvVarName = Annotated[str, Field(pattern=_ENV_PATTERN, description="name of an environment variable")]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in the YAML must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_models(config_union: Any) -> list[type[BaseModel]]:
    """The per-kind models of a kind union (`SourceConfig`), in their order."""
    union = get_args(config_union)[0]
    return [get_args(member)[0] if get_origin(member) is Annotated else member for member in get_args(union)]


def kind_of(model: type[BaseModel]) -> str:
    """The `kind` a config model answers to."""
    return str(get_args(model.model_fields["kind"].annotation)[0])
