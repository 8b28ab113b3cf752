"""`lmdisp report RUN_DIR ...`: paper-style tables from evaluation runs (`lmdisp.eval.report`).

    lmdisp report results/table2/evals                         # every evaluation run below it
    lmdisp report results/evaluate/run1 results/evaluate/run2 --reference ce
    lmdisp report results/tables/table2-gpt2/evals --select best   # the authors' checkpoint selection
"""

from __future__ import annotations

from lmdisp.cli.options import config_command
from lmdisp.cli.ui import console
from lmdisp.eval.report import ReportConfig


def _run(config, sets, flags) -> None:
    from lmdisp.config import load_config
    from lmdisp.eval import run_report

    cfg = load_config(ReportConfig, config, sets, flags, kind="report")
    run = run_report(cfg)
    _print(run)
    console.print(f"results: [bold]{run.path}[/]", soft_wrap=True)


def _print(run) -> None:
    from rich.table import Table

    from lmdisp.eval.report import formatted

    label = {"final": "final checkpoints", "best": "best checkpoint per seed (authors' test-set selection)",
             "best-trained": "best trained checkpoint per seed (test-set selection, step 0 left out)"}
    table = Table(title=f"Evaluation summary · {label[run.select]}",
                  caption="mean ± std over seeds (%); best of each block in bold")
    for col in run.display.columns:
        text = col in ("Model", "Method", "Seeds", "Step")  # labels wrap; numbers keep their width
        table.add_column(col, justify="left" if text else "right", overflow="fold", no_wrap=not text)
    last = None
    for row in formatted(run.table, run.tasks, "rich"):
        if last is not None and row[0] != last:
            table.add_section()
        table.add_row(*(row if row[0] != last else ["", *row[1:]]))
        last = row[0]
    console.print(table)
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}")


report = config_command(ReportConfig, "report", "Result tables from evaluation runs: mean ± std over seeds, "
                        "Average, Rank, t-test (CSV, Markdown, LaTeX).", _run)
