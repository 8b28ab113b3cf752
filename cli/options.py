"""Typer commands generated from config dataclasses: one source per option.

Every field of a command's config (`lmdisp.config.option`) is declared once, with its
default and help. Fields marked `cli="flag"` become `--kebab-case` options (grouped in help
panels), `cli="arg"` the positional arguments, and the rest are listed at the end of
`--help` as `--set key=value` settings. Every command also takes `--config FILE|NAME` and
`--set`. Flags default to None here, so only what the user typed overrides the config
(`lmdisp.config.load_config` does the typed merging).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer
from rich.markup import escape

from lmdisp.config import choices, field_default, flag

_CONFIG_PANEL = "Configuration"


def _plain_help_option(option):
    """`--help` is a flag: no `<bool>` type next to it."""
    if option is not None:
        option.metavar = ""
    return option


class Command(typer.core.TyperCommand):
    """A command whose `--help` row shows no type."""

    def get_help_option(self, ctx):
        return _plain_help_option(super().get_help_option(ctx))


class Group(typer.core.TyperGroup):
    def get_help_option(self, ctx):
        return _plain_help_option(super().get_help_option(ctx))


def _cli_type(hint: Any) -> Any:
    """The type Typer parses a flag as; lmdisp's loader converts it to the field's type (and
    checks its choices and range, so every refusal is the loader's one line)."""
    strip = lambda h: typing.get_args(h)[0] if typing.get_origin(h) is Annotated else h  # noqa: E731
    args = [strip(a) for a in typing.get_args(strip(hint)) if a is not type(None)] or [strip(hint)]
    if len(args) == 1 and args[0] in (bool, int, float):
        return args[0]
    return str


def _shown_default(value: Any) -> str:
    """The default as `--help` shows it (plainly: `gpt2`, `0.1`, `on`), "" for none."""
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


_WIDE = 32  # choices longer than this are listed in the help text, not the type column


def _help(cls: type, field: dataclasses.Field) -> str:
    """The field's help, its choices when too many for the type column, and its default,
    written into the text (Typer would show a string default in parentheses)."""
    text, value = escape(field.metadata["help"]), _shown_default(field_default(field))
    listed = _choices(cls, field)
    if len(listed) > _WIDE:  # spaced, so that the list wraps
        text = f"{escape(listed.replace('|', ' | '))} {text}"
    return f"{text} [dim]\\[default: {escape(value)}][/]" if value else text


def _choices(cls: type, field: dataclasses.Field) -> str:
    options = choices(cls, field.name)
    return "[" + "|".join(map(str, options)) + "]" if options else ""


def _metavar(cls: type, field: dataclasses.Field, kind: Any) -> str | None:
    """`[a|b|c]` for a field with choices (`<choice>` when they are listed in the help);
    nothing for an on/off flag."""
    listed = _choices(cls, field)
    if listed:
        return listed if len(listed) <= _WIDE else "<choice>"
    return "" if kind is bool else None


def _param(cls: type, field: dataclasses.Field, hint: Any, command: str) -> inspect.Parameter | None:
    meta = field.metadata
    shown = meta.get("commands")
    if meta.get("cli") not in ("flag", "arg") or (shown and command not in shown):
        return None
    default = field_default(field)
    if meta["cli"] == "arg":
        info = typer.Argument(help=escape(meta["help"]), show_default=False)
        return inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                 annotation=Annotated[Optional[List[str]], info])
    kind = _cli_type(hint)
    names = [f"{flag(field.name)}/--no-{field.name.replace('_', '-')}" if kind is bool else flag(field.name)]
    if meta.get("flag"):
        names.insert(0, meta["flag"])
    if meta.get("short"):
        names.append(meta["short"])
    info = typer.Option(*names, help=_help(cls, field), show_default=False, metavar=_metavar(cls, field, kind),
                        rich_help_panel=meta.get("panel"))
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], info])


def set_only_help(cls: type, command: str) -> str:
    """The `--set` settings of a config, one per line with its default, for `--help`."""
    lines = []
    for field in dataclasses.fields(cls):
        meta, shown = field.metadata, field.metadata.get("commands")
        if meta.get("cli") != "set" or (shown and command not in shown):
            continue
        default, options = field_default(field), choices(cls, field.name)
        among = f" [{'|'.join(map(str, options))}]" if options else ""
        lines.append(escape(f"{field.name} = {default!r}{among}: {meta['help']}"))
    if not lines:
        return ""
    return "Settings for --set KEY=VALUE or a --config YAML (key = default):\n\n" + "\n\n".join(lines)


def _renamed(cls: type, command: str) -> list[inspect.Parameter]:
    """Hidden options under the old names of renamed fields (`cls.RENAMED`): given, they stop
    with a one-line hint naming the new option."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for old, new in getattr(cls, "RENAMED", {}).items():
        kind = _cli_type(hints[new])
        names = [f"{flag(old)}/--no-{old.replace('_', '-')}" if kind is bool else flag(old)]
        out.append(inspect.Parameter(f"renamed__{old}", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=(
            Annotated[Optional[kind], typer.Option(*names, hidden=True)])))
    return out


def _refuse_renamed(cls: type, kwargs: dict) -> None:
    from lmdisp.errors import ConfigError

    for key in [k for k in kwargs if k.startswith("renamed__")]:
        if kwargs.pop(key) is not None:
            old = key.removeprefix("renamed__")
            raise ConfigError(f"{flag(old)} is now {flag(cls.RENAMED[old])} (one name on every command)")


def config_command(cls: type, command: str, doc: str, run: Callable[..., None], *,
                   extra: list[inspect.Parameter] = (), config_names: tuple[str, ...] = ("--config", "-c"),
                   ) -> Callable[..., None]:
    """A Typer command whose options are the fields of `cls`; it calls
    `run(config=..., sets=[...], flags={...}, **extra)`. `config_names`: the names of
    `--config` (evaluate also calls it `--preset`)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    params = [p for f in dataclasses.fields(cls) if (p := _param(cls, f, hints[f.name], command))]
    params.sort(key=lambda p: p.kind)  # positional arguments first
    common = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[str], typer.Option(*config_names, help="A YAML of config keys (a run's saved config.yaml "
                                        "replays it), or the name of a shipped config.",
                                        rich_help_panel=_CONFIG_PANEL)]),
        inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[List[str]], typer.Option("--set", help="KEY=VALUE for any config key (listed below); "
                                              "repeatable.", rich_help_panel=_CONFIG_PANEL)]),
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--verbose", "-v", help="Also show the libraries' notices and progress bars "
                               "(always kept in lmdisp.log in the run folder).", metavar="",
                               rich_help_panel=_CONFIG_PANEL)]),
        *extra, *_renamed(cls, command),
    ]
    extra_names = [p.name for p in extra]

    def cmd(**kwargs) -> None:
        from lmdisp.cli.session import cli_session

        config, sets, verbose = kwargs.pop("config"), kwargs.pop("set_") or [], kwargs.pop("verbose")
        _refuse_renamed(cls, kwargs)
        extras = {name: kwargs.pop(name) for name in extra_names}
        if "models" in kwargs or "runs" in kwargs:  # positional lists: empty means "not given"
            for key in ("models", "runs"):
                if key in kwargs and not kwargs[key]:
                    kwargs[key] = None
        flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items() if v is not None}
        from lmdisp.preempt import sigterm_raises

        try:
            # the libraries' logging and progress bars, put back after the command; SIGTERM (a scheduler's
            # notice) stops like Ctrl-C, exit 143
            with cli_session(verbose), sigterm_raises():
                run(config=config, sets=sets, flags=flags, **extras)
        except KeyboardInterrupt as exc:  # Typer would exit 130 silently; lmdisp.errors.Interrupted says more
            typer.secho(f"interrupted: {exc}" if str(exc) else "interrupted", fg="red", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    cmd.__signature__ = inspect.Signature(sorted([*params, *common], key=lambda p: p.kind))  # positionals first
    cmd.__doc__ = doc
    cmd.__name__ = command
    cmd.lmdisp_epilog = set_only_help(cls, command)
    return cmd
