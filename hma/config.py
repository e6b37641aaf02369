"""Typed configs: pydantic models loaded from YAML with errors that name the file, key and expectation.

Every config in the project is a pydantic model that lives beside the component it configures;
this module only knows how to turn a YAML file (local or remote URL) into one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import fsspec
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from hma import storage
from hma.errors import ConfigError

# A config field holding a local path or a remote URL; a relative local path becomes absolute
# (see storage.absolute), so Ray workers with another working directory find the same files.
StorageURL = Annotated[str, AfterValidator(storage.absolute)]

M = TypeVar("M", bound=BaseModel)


def check_preset(kind: str, name: str, presets: Mapping[str, Any]) -> None:
    """Refuse a preset name that `presets` does not know, listing the known ones."""
    if name not in presets:
        raise ConfigError(f"unknown {kind} preset {name!r} (known: {', '.join(presets)})")


class StrictModel(BaseModel):
    """Base for project configs: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(url: str) -> Any:
    """Parse a YAML file with `yaml.safe_load`; errors name the file and the line."""
    try:
        with fsspec.open(url, "r") as f:
            return yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{url}: file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{url}: not valid YAML: {e}") from e


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def validate(model: type[M], data: Any, source: str) -> M:
    """Build `model` from plain data; a failure lists every bad key with what was expected."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [
            f"key {_key_path(err['loc'])!r}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        ]
        raise ConfigError(f"{source}: invalid {model.__name__}: " + "; ".join(problems)) from None


def load_config(model: type[M], url: str) -> M:
    """Load and validate a YAML config file into `model`."""
    return validate(model, read_yaml(url), url)
