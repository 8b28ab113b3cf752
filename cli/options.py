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

from lmdisp.config import field_default, flag

_CONFIG_PANEL = "Configuration"


def _cli_type(hint: Any) -> Any:
    """The type Typer parses a flag as; lmdisp's loader converts it to the field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(args) == 1 and args[0] in (bool, int, float):
        return args[0]
    return str


def _shown_default(value: Any) -> str | bool:
    if value is None or value == [] or value == {}:
        return False
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _param(field: dataclasses.Field, hint: Any, command: str) -> inspect.Parameter | None:
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
    if field.name == "lambda_disp":
        names = ["--lambda", "--lambda-disp"]
    if meta.get("short"):
        names.append(meta["short"])
    info = typer.Option(*names, help=escape(meta["help"]), show_default=_shown_default(default),
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
        default = field_default(field)
        lines.append(escape(f"{field.name} = {default!r}: {meta['help']}"))
    if not lines:
        return ""
    return "Settings for --set KEY=VALUE or a --config YAML (key = default):\n\n" + "\n\n".join(lines)


def config_command(cls: type, command: str, doc: str, run: Callable[..., None], *,
                   extra: list[inspect.Parameter] = ()) -> Callable[..., None]:
    """A Typer command whose options are the fields of `cls`; it calls
    `run(config=..., sets=[...], flags={...}, **extra)`."""
    hints = typing.get_type_hints(cls)
    params = [p for f in dataclasses.fields(cls) if (p := _param(f, hints[f.name], command))]
    params.sort(key=lambda p: p.kind)  # positional arguments first
    common = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[str], typer.Option("--config", "-c", help="A YAML of config keys (a run's saved config.yaml "
                                        "replays it), or the name of a shipped config.",
                                        rich_help_panel=_CONFIG_PANEL)]),
        inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[List[str]], typer.Option("--set", help="KEY=VALUE for any config key (listed below); "
                                              "repeatable.", rich_help_panel=_CONFIG_PANEL)]),
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--verbose", "-v", help="Also show the libraries' notices and progress bars "
                               "(always kept in lmdisp.log in the run folder).", rich_help_panel=_CONFIG_PANEL)]),
        *extra,
    ]
    extra_names = [p.name for p in extra]

    def cmd(**kwargs) -> None:
        from lmdisp.cli.session import cli_session

        config, sets, verbose = kwargs.pop("config"), kwargs.pop("set_") or [], kwargs.pop("verbose")
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
