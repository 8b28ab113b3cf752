"""Typed configs and their loading: defaults < YAML file < command-line flags.

Each command has a dataclass config whose field names are the YAML keys and (kebab-cased)
the CLI flags; `__post_init__` rejects bad values with a message naming the flag. Unknown
YAML keys are an error, so configs cannot rot silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from lmdisp.errors import ConfigError

T = TypeVar("T")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build `cls` from its defaults, then a YAML file, then non-None `overrides`."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(path))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return cls(**values)
    except TypeError as exc:  # a wrong type that __post_init__ did not anticipate
        raise ConfigError(f"invalid configuration: {exc}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def as_dict(cfg: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def require(ok: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `ok` (user input is never `assert`ed)."""
    if not ok:
        raise ConfigError(message)


def parse_sets(items: list[str], cls) -> dict[str, Any]:
    """`--set key=value` pairs, values parsed as YAML scalars; keys must be fields of `cls`."""
    import yaml

    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected key=value with key one of {', '.join(sorted(names))}")
        out[key] = yaml.safe_load(value)
    return out
