"""`lmdisp`: the Typer app. One module per command; each command's options are generated
from its config dataclass (`lmdisp.cli.options`).

    lmdisp measure                      # the bundled SmolLM2-135M, paper protocol
    lmdisp measure gpt2 gpt2-medium --dataset builtin --repetitions 20
"""

from __future__ import annotations

import re
import sys

import typer

from lmdisp.cli.options import Command, Group

app = typer.Typer(
    name="lmdisp",
    cls=Group,
    help="Embedding condensation and the dispersion loss (Liu et al., ICML 2026).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from lmdisp.cli import evaluate, measure, paper, posttrain, prepare, report, train

    commands = {"measure": measure.measure, **train.COMMANDS, **posttrain.COMMANDS, "prepare": prepare.prepare,
                "evaluate": evaluate.evaluate, "report": report.report, "paper": paper.paper}
    for name, fn in commands.items():
        app.command(name, cls=Command, epilog=getattr(fn, "lmdisp_epilog", None) or None)(fn)
    paper.attach(app)  # `lmdisp paper` runs the other commands in-process


_register()


@app.callback()
def _root() -> None:
    """Embedding condensation and the dispersion loss (Liu et al., ICML 2026)."""


def main() -> None:
    """Console-script entry: user errors, Typer's usage errors included, become one line on
    stderr and exit code 2."""
    from lmdisp.preempt import process_handler

    with process_handler():  # a SIGTERM outside the command's own handlers never cuts the last line
        _main()


def _main() -> None:
    from lmdisp.errors import LmdispError

    click = sys.modules[typer.BadParameter.__module__]  # click's exceptions (typer >= 0.17 vendors click)

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:  # `lmdisp` alone: the help, already shown
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # a mistyped flag, value or command: keep click's "did you mean"
        typer.secho(f"error: {usage_line(exc)}", fg="red", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        typer.secho(f"error: {exc.format_message()}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.secho("aborted", fg="red", err=True)
        sys.exit(1)
    except LmdispError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # lmdisp.errors.Interrupted says how to continue
        typer.secho(f"interrupted: {exc}" if str(exc) else "interrupted", fg="red", err=True)
        sys.exit(getattr(exc, "exit_code", 130))  # 143 after SIGTERM (lmdisp.errors.Terminated)
    except Exception as exc:  # a write the library does not name (a log line, lm-eval's cache) hit a full disk
        from lmdisp.space import unnamed_no_space

        line = unnamed_no_space(exc)
        if line is None:
            raise
        typer.secho(f"error: {line}", fg="red", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc) -> str:
    """Click's usage error as one line: what was wrong (with its suggestion) and where help is."""
    message = " ".join(exc.format_message().split())
    message = re.sub(r"\(Possible options: ([^)]*)\)", r"(did you mean \1?)", message)
    ctx = getattr(exc, "ctx", None)
    where = f"see `{ctx.command_path} --help`" if ctx is not None else ""
    if where:
        where = f" ({where})" if message.endswith("?") else f"; {where}"
    return f"{message}{where}"


if __name__ == "__main__":
    main()
