"""One typed configuration path for every command: defaults < `--config FILE.yaml` < `--set
key=value` < flags.

Each command has a dataclass config (`MeasureConfig`, `TrainConfig`, `EvaluateConfig`,
`ReportConfig`). A field is declared once with `option(default, help, ...)`: its name is the
YAML key and the `--set` key, its kebab-case is the flag, its default and help are what
`--help` shows. Values from YAML and `--set` are converted to the field's declared type by
pydantic (so `lr: 1e-4` is a float and `lora: "false"` is False) or refused in one line that
names the option the user can type, the expected type and the value given. Unknown keys are
refused with the list of valid ones.

Choices and ranges are part of the type: `Literal["a", "b"]` (the help shows `[a|b]`) and
the constraints below (`Positive`, `NonNegative`, `Fraction`, ... or any
`Annotated[float, annotated_types.Gt(0)]`). A config's `__post_init__` first calls
`validate(self)`, the same check the loader runs, so a config built in Python is held to the
same rules; what stays in `__post_init__` is the cross-field rules. Every float is finite.

Named configs (`--config paper`) are YAML files shipped with the package under
`configs/<kind>/` and read through `importlib.resources`, so they work from a wheel.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from lmdisp.errors import ConfigError
from lmdisp.fieldtypes import (Dtype, Fraction, NonNegative, NonNegativeInt, Normalize, OpenUnit,  # noqa: F401
                               Positive, PositiveInt, Probability, accepts, adapter, base_type, choices_of,
                               is_list, is_optional, normalizers, range_of, type_name)

T = TypeVar("T")
_MISSING = dataclasses.MISSING

# Help panels shared by the commands: one panel per concept, the same on every command.
MODEL_PANEL, DEVICE_PANEL, OUTPUT_PANEL = "Model", "Device", "Outputs"

def option(default: Any = _MISSING, help: str = "", *, cli: str = "flag", short: str | None = None,
           panel: str | None = None, commands: tuple[str, ...] | None = None, factory: Any = None,
           flag: str | None = None) -> Any:
    """A config field with its help. `cli`: "flag" (a `--kebab-case` option), "arg" (positional
    arguments) or "set" (settable with `--set` / YAML only, listed at the end of `--help`), or
    "fixed" (set by the command itself). `commands`: the commands that show it (None: all).
    `flag`: the option's name when it is not the field's kebab-case (which stays an alias)."""
    metadata = {"help": help, "cli": cli, "short": short, "panel": panel, "commands": commands, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_name(cls: type, name: str) -> str:
    """How a user sets field `name` on the command line: its flag, or `--set name=`."""
    field = _fields(cls).get(name)
    if field is not None and field.metadata.get("cli") == "arg":
        return name.upper()
    if field is not None and field.metadata.get("cli", "flag") == "flag":
        return field.metadata.get("flag") or flag(name)
    return f"--set {name}="


def shown(cls: type, name: str, value: Any) -> str:
    """What the user typed to give `name` this value: `--tau 0.5` or `--set clamp=0.5`."""
    where = option_name(cls, name)
    return f"{where}{'' if where.endswith('=') else ' '}{value}"


def require(ok: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `ok` (user input is never `assert`ed)."""
    if not ok:
        raise ConfigError(message)


def as_dict(cfg: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def field_default(field: dataclasses.Field) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return None


def choices(cls: type, name: str) -> tuple:
    """The choices of field `name` of `cls` (its `Literal` values), else ()."""
    return choices_of(_hints(cls)[name])


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- loading

def load_config(cls: type[T], config: str | Path | None = None, sets: list[str] | None = None,
                flags: dict[str, Any] | None = None, *, kind: str | None = None, fixed: dict[str, Any] | None = None,
                config_option: str = "--config", part_of: type | None = None) -> T:
    """Build `cls` from its defaults, then `config` (a YAML path or a named config of `kind`),
    then `--set key=value` items, then non-None `flags`, then `fixed` (set by the command).
    A key given both as a flag and with `--set` is refused rather than silently resolved.
    `part_of`: a config that extends `cls`; its own keys in the YAML are skipped (`prepare`
    reads a training config for its data settings), while `--set` takes only `cls`'s keys."""
    values: dict[str, Any] = {}
    if config is not None:
        path = resolve_config(config, kind, config_option)
        data = read_yaml(path)
        skipped = set(_fields(part_of)) - set(_fields(cls)) if part_of else set()
        values.update(convert_all(cls, {k: v for k, v in data.items() if k not in skipped}, source=str(path)))
    set_values = parse_sets(sets or [], cls, part_of)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    both = sorted(set(set_values) & set(flags))
    if both:
        raise ConfigError(f"{option_name(cls, both[0])} and --set {both[0]}= both given; use one")
    values.update(set_values)
    values.update(convert_all(cls, flags, source="flags"))
    values.update(fixed or {})
    try:
        return cls(**values)
    except TypeError as exc:  # a wrong type that the conversion did not anticipate
        raise ConfigError(f"invalid configuration: {exc}") from None


def convert_all(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    fields = _fields(cls)
    _refuse_renamed(cls, values, source)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(sorted(n for n, f in fields.items() if f.metadata.get("cli") != "fixed"))
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {valid}")
    return {k: convert(cls, k, v, source) for k, v in values.items()}


def convert(cls: type, name: str, value: Any, source: str = "flags") -> Any:
    """`value` converted to the declared type of `cls.name` (its choices and range included),
    or a one-line ConfigError naming what the user typed."""
    hint = _hints(cls)[name]
    if hint is Any or value is None and is_optional(hint):
        return value
    value = _plain(value)
    for step in normalizers(hint):
        value = step.fn(value)
    if isinstance(value, str) and is_list(hint):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, bool) and accepts(hint, (int, float)) and not accepts(hint, (bool,)):
        _bad(cls, name, value, hint, source)  # pydantic would read true as 1
    try:
        out = adapter(hint).validate_python(value)
    except ConfigError:
        raise
    except Exception:  # pydantic.ValidationError, kept lazy
        out = _domain_error(cls, name, value, hint, source)
    if isinstance(out, float) and not math.isfinite(out):
        raise ConfigError(f"{_where(cls, name, out, source)}: must be a finite number")
    return out


def validate(cfg: Any) -> None:
    """Check (and convert) every field of `cfg` against its type, in place: the one path the
    loader and a config built in Python share. Call it first in `__post_init__`."""
    for field in dataclasses.fields(cfg):
        setattr(cfg, field.name, convert(type(cfg), field.name, getattr(cfg, field.name), "value"))


def _plain(value: Any) -> Any:
    """Paths as text (a field typed `str` takes a `Path` from Python callers)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def _domain_error(cls: type, name: str, value: Any, hint: Any, source: str):
    """The value has the wrong type (`expected ...`) or lies outside the field's choices or range."""
    try:
        typed = adapter(base_type(hint)).validate_python(value)
    except Exception:
        _bad(cls, name, value, hint, source)
    choices = choices_of(hint)
    what = _where(cls, name, typed if not choices else repr(typed), source)
    if choices:
        raise ConfigError(f"{what}: choose one of {', '.join(map(str, choices))}")
    raise ConfigError(f"{what}: must be {range_of(hint)}")


def _where(cls: type, name: str, value: Any, source: str) -> str:
    if source in ("flags", "value", "--set"):
        return shown(cls, name, value)
    return f"{source}: {name} {value}"


def _bad(cls: type, name: str, value: Any, hint: Any, source: str):
    """One line naming what the user typed (a flag, `--set key=value`, or a YAML key)."""
    if source == "--set":
        where, shown = f"--set {name}={value}", ""
    elif source in ("flags", "value"):
        where, shown = option_name(cls, name), f", got {value!r}"
    else:
        where, shown = f"{source}: {name}", f", got {value!r}"
    raise ConfigError(f"{where}: expected {type_name(hint)}{shown}")


def _refuse_renamed(cls: type, keys, source: str) -> None:
    """A key that was renamed (`cls.RENAMED`, old -> new): one line naming the new one."""
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in keys:
            raise ConfigError(f"{source}: {old} is now {new} ({flag(new)}; one name on every command)")


def parse_sets(items: list[str], cls: type, part_of: type | None = None) -> dict[str, Any]:
    """`--set key=value` pairs, values read as YAML scalars then converted to the field's type.
    A key of the wider config `part_of` (a training key given to `prepare`) is named as such."""
    import yaml

    fields = {n for n, f in _fields(cls).items() if f.metadata.get("cli") != "fixed"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        _refuse_renamed(cls, {key}, "--set")
        if not sep or key not in fields:
            wider = f"{key} is a {part_of.__name__} key this command does not read; " \
                if part_of and key in _fields(part_of) else ""
            raise ConfigError(f"--set {item!r}: {wider}expected key=value with key one of {', '.join(sorted(fields))}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        out[key] = convert(cls, key, value, "--set")
    return out


# ----------------------------------------------------------------------------- files

def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def packaged(*parts: str):
    """A file or folder shipped under `configs/` (a Traversable; works from a wheel)."""
    from importlib.resources import files

    return files("lmdisp.configs").joinpath(*parts)


def named_configs(kind: str) -> list[str]:
    folder = packaged(kind)
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".yaml")) \
        if folder.is_dir() else []


def resolve_config(config: str | Path, kind: str | None, config_option: str = "--config") -> Path:
    """A YAML path as given, or a named config shipped under `configs/<kind>/<name>.yaml`."""
    path = Path(config).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists() or kind is None:
        if not path.is_file():
            raise ConfigError(f"{config_option}: file not found: {config}")
        return path
    shipped = packaged(kind, f"{config}.yaml")
    if not shipped.is_file():
        raise ConfigError(_unknown_named_config(str(config), kind, config_option))
    return Path(str(shipped))


_COMMAND_OF = {"midtrain": "midtrain", "pretrain": "pretrain", "eval": "evaluate", "measure": "measure",
               "report": "report"}


def _unknown_named_config(config: str, kind: str, config_option: str) -> str:
    """What to type instead of an unknown named config: a close name, or the command that ships it."""
    import difflib

    names = named_configs(kind)
    close = difflib.get_close_matches(config, names, 3)
    known = (f"did you mean {' or '.join(close)}" if close else f"choose one of {', '.join(names)}") if names \
        else f"`lmdisp {_COMMAND_OF.get(kind, kind)}` ships none"
    other = next((k for k in _COMMAND_OF if k != kind and packaged(k, f"{config}.yaml").is_file()), None)
    if other:
        known += f"; {config} is a {other} config (lmdisp {_COMMAND_OF[other]} --config {config})"
    return f"{config_option} {config!r}: no such named config; {known} (or give a .yaml file)"


def build_with_extras(cls: type[T], kwargs: dict, extras: dict, key: str) -> T:
    """`cls(**kwargs)` updated by the user's `extras` (`--set trainer_args=...`), each key refused in
    one line unless it is a field of `cls`; a value `cls` rejects is one line too, named by `key`."""
    unknown = sorted(set(extras) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{key}: {', '.join(unknown)} not a {cls.__name__} field")
    try:
        return cls(**{**kwargs, **extras})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
