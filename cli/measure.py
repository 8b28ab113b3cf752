"""`lmdisp measure [MODEL ...]`: load the config, call `lmdisp.measure.run_measure`, draw the
progress and print the table.

    lmdisp measure                                   # the bundled SmolLM2-135M, paper protocol
    lmdisp measure gpt2 gpt2-medium --dataset builtin --repetitions 20
    lmdisp measure --site residual,attn,mlp --skip-first 1 --metrics centred,isoscore,rogue
    lmdisp measure gpt2 results/midtrain/run/final --compare      # + linear CKA layer by layer
"""

from __future__ import annotations

from lmdisp.cli.options import config_command
from lmdisp.cli.ui import console, progress_bar
from lmdisp.measure.config import MeasureConfig


def _run(config, sets, flags) -> None:
    from lmdisp.config import load_config
    from lmdisp.measure import run_measure

    cfg = load_config(MeasureConfig, config, sets, flags, kind="measure")
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_start(spec: str) -> None:
            bar.console.print(f"loading [bold]{spec}[/]")

        def on_progress(spec: str, done: int, total: int) -> None:
            if spec not in tasks:
                tasks[spec] = bar.add_task(spec, total=total)
            bar.update(tasks[spec], completed=done)

        run = run_measure(cfg, progress=on_progress, on_model_start=on_start)
    _print_table(run)
    console.print(f"results: [bold]{run.path}[/]", soft_wrap=True)


def _ci(lo: float, hi: float) -> str:
    return "" if lo != lo else f"\\[{lo:+.2f},{hi:+.2f}]"  # NaN (one repetition, one layer): no interval


def _signed(value: float) -> str:
    return "n/a" if value != value else f"{value:+.3f}"  # an undefined rho (flagged in a note and summary.json)


_CAPTION = ("ρ, τ: Spearman, Kendall of mean cosine similarity vs layer (positive = condenses with depth); ρ CI: "
            "bootstrap interval over repetitions (models.csv: ρ and τ); L: blocks; cos[0], cos[L]: first and last "
            "layer; s: seconds")


def _print_table(run) -> None:
    """Every number and the ρ interval at any width from 80 columns: a model name that does not
    fit its column is shown by a number, with the names listed above the table."""
    from rich import box
    from rich.table import Table

    sites = run.table["site"].nunique() > 1 or (run.table["site"] != "hidden").any()
    columns = ([("site", 8)] if sites else []) + [("params", 7), ("L", 3), ("ρ", 6), ("ρ CI", 13), ("τ", 6),
                                                  ("cos[0]", 6), ("cos[L]", 6), ("s", 5)]
    names = list(dict.fromkeys(run.table["model"]))
    room = console.width - sum(w for _, w in columns) - len(columns) - 1
    key = {n: n for n in names} if max(map(len, names)) <= room else {n: f"[{i + 1}]" for i, n in enumerate(names)}
    table = Table(title="Embedding condensation", box=box.SIMPLE_HEAD, caption=_CAPTION, padding=(0, 0),
                  show_edge=False)
    table.add_column("model", no_wrap=True)
    for col, width in columns:
        table.add_column(col, justify="left" if col == "site" else "right", no_wrap=True, min_width=width)
    for row in run.table.itertuples(index=False):
        table.add_row(key[row.model].replace("[", "\\["), *([row.site] if sites else []), f"{row.params / 1e6:.1f}M",
                      str(row.layers), _signed(row.spearman_rho), _ci(row.rho_ci_low, row.rho_ci_high),
                      _signed(row.kendall_tau), f"{row.mean_cos_first:.3f}", f"{row.mean_cos_last:.3f}",
                      f"{row.wall_time_s:.1f}")
    for name in (names if key[names[0]] != names[0] else []):
        console.print(f"{key[name]} {name}", highlight=False, markup=False, soft_wrap=True)
    console.print(table)
    if run.compare is not None:
        _print_compare(run)


def _print_compare(run) -> None:
    from rich import box
    from rich.table import Table

    a, b = (m.spec for m in run.models)
    table = Table(title=f"Linear CKA, {a} vs {b}", box=box.SIMPLE_HEAD,
                  caption="per layer pair, mean over repetitions \\[bootstrap interval]; 1 = same geometry")
    for col in ("site", "layer", "CKA"):
        table.add_column(col, justify="right" if col != "site" else "left")
    for row in run.compare.itertuples(index=False):
        table.add_row(row.site, f"{row.layer_a}↔{row.layer_b}", f"{row.cka:.3f} {_ci(row.ci_low, row.ci_high)}")
    console.print(table)


measure = config_command(MeasureConfig, "measure", "Measure embedding condensation: per-layer token cosine "
                         "similarity, paper protocol by default.", _run)
