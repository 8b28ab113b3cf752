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
    return "" if lo != lo else f"\\[{lo:+.2f},{hi:+.2f}]"  # NaN (one repetition): no interval


def _print_table(run) -> None:
    from rich import box
    from rich.table import Table

    sites = run.table["site"].nunique() > 1 or (run.table["site"] != "hidden").any()
    wide = console.width >= 100  # the interval column needs room; models.csv always has it
    table = Table(title="Embedding condensation", box=box.SIMPLE_HEAD, caption="ρ, τ: Spearman, Kendall of mean cosine similarity "
                  "vs layer (positive = condenses with depth); ρ CI: bootstrap interval over repetitions (models.csv: ρ "
                  "and τ); L: blocks; cos[0], cos[L]: first and last layer; s: seconds")
    table.add_column("model", overflow="fold", min_width=12)  # a long path wraps; the numbers never shrink
    if sites:
        table.add_column("site", overflow="fold", min_width=8)
    # on a narrow terminal the site column takes the place of params (both are in models.csv)
    columns = ([("params", 7)] if wide or not sites else []) + [("L", 3), ("ρ", 6)] + \
        ([("ρ CI", 13)] if wide else []) + [("τ", 6), ("cos[0]", 6), ("cos[L]", 6), ("s", 5)]
    for col, width in columns:
        table.add_column(col, justify="right", no_wrap=True, min_width=width)
    for row in run.table.itertuples(index=False):
        cells = [row.model] + ([row.site] if sites else [])
        if wide or not sites:
            cells.append(f"{row.params / 1e6:.1f}M")
        table.add_row(*cells, str(row.layers),
                      f"{row.spearman_rho:+.3f}", *([_ci(row.rho_ci_low, row.rho_ci_high)] if wide else []),
                      f"{row.kendall_tau:+.3f}",
                      f"{row.mean_cos_first:.3f}", f"{row.mean_cos_last:.3f}", f"{row.wall_time_s:.1f}")
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
