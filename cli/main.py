"""`lmdisp`: the Typer app. One module per subcommand; heavy imports happen inside them.

    lmdisp measure                      # the bundled SmolLM2-135M, paper protocol
    lmdisp measure gpt2 gpt2-medium --dataset builtin --repetitions 20
"""

from __future__ import annotations

import sys

import typer

from cli import distill, evaluate, measure, midtrain, pretrain, report

app = typer.Typer(
    name="lmdisp",
    help="Embedding condensation and the dispersion loss (Liu et al., ICML 2026).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("measure")(measure.measure)
app.command("midtrain")(midtrain.midtrain)
app.command("pretrain")(pretrain.pretrain)
app.command("distill")(distill.distill)
app.command("evaluate")(evaluate.evaluate)
app.command("report")(report.report)


@app.callback()
def _root() -> None:
    """Embedding condensation and the dispersion loss (Liu et al., ICML 2026)."""


def main() -> None:
    """Console-script entry: user errors become one line on stderr and exit code 2."""
    from lmdisp.errors import LmdispError

    try:
        app()
    except LmdispError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
