"""`lmdisp report RUN_DIR ...`: paper-style tables from evaluation runs (`lmdisp.report`).

    lmdisp report results/table2/evals                         # every evaluation run below it
    lmdisp report results/evaluate/run1 results/evaluate/run2 --reference ce
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cli.ui import console


def report(
    runs: Optional[List[Path]] = typer.Argument(
        None, help="`lmdisp evaluate` run folders, or folders holding them (searched recursively)."),
    reference: str = typer.Option("dispersion", help="Method each row is t-tested against, in every base "
                                                     "model's block."),
    tasks: Optional[str] = typer.Option(None, help="Table columns, comma-separated (default: every task of the "
                                                   "runs, the paper's order first)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Exact run folder (new or empty)."),
    results_dir: Path = typer.Option(Path("results"), help="Where timestamped run folders go."),
    plot: bool = typer.Option(True, help="Write the bar chart of the averages."),
) -> None:
    """Result tables from evaluation runs: mean ± std over seeds, Average, Rank, t-test (CSV, Markdown, LaTeX)."""
    from lmdisp.report import ReportConfig, run_report

    cfg = ReportConfig(runs=[str(r) for r in runs or []], reference=reference, tasks=tasks,
                       output=str(output) if output else None, results_dir=str(results_dir), plot=plot)
    run = run_report(cfg)
    _print(run)
    console.print(f"results: [bold]{run.path}[/]")


def _print(run) -> None:
    from rich.table import Table

    from lmdisp.report import formatted

    table = Table(title="Evaluation summary", caption="mean ± std over seeds (%); best of each block in bold")
    for col in run.display.columns:
        table.add_column(col, justify="left" if col in ("Model", "Method", "Seeds") else "right", overflow="fold")
    last = None
    for row in formatted(run.table, run.tasks, "rich"):
        if last is not None and row[0] != last:
            table.add_section()
        table.add_row(*(row if row[0] != last else ["", *row[1:]]))
        last = row[0]
    console.print(table)
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}")
