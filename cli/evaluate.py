"""`lmdisp evaluate`: load the config, call `lmdisp.eval.run_evaluate`, print the table.

    lmdisp evaluate --tasks arc_easy,mmlu                        # the bundled SmolLM2-135M
    lmdisp evaluate --model results/midtrain/<run> --preset paper
    lmdisp evaluate --model results/midtrain/<run> --preset paper --checkpoints all   # every checkpoint
    lmdisp evaluate --model gpt2 --preset paper --tasks arc_easy,piqa --limit 100 --seed 2
    lmdisp evaluate --tasks my_task --include-path my_tasks/     # your own YAML + local data, offline
    lmdisp evaluate --tasks 'list:arc*' --include-path my_tasks/ # the task names lm-eval knows
"""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer

from lmdisp.cli.options import config_command
from lmdisp.cli.ui import console
from lmdisp.eval.config import EvaluateConfig


def _run(config, sets, flags, preset) -> None:
    import logging

    from lmdisp.errors import ConfigError
    from lmdisp.eval import load_evaluate_config, run_evaluate

    if preset and config:
        raise ConfigError("--preset and --config both given: a preset is a named config; use one")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # its per-call INFO chatter (warnings go to lmdisp.log)
    listing = str(flags.get("tasks", ""))
    if listing == "list" or listing.startswith("list:"):
        _list_tasks(flags, sets, listing.partition(":")[2] or "*")
        return
    cfg = load_evaluate_config(preset or config, flags, sets, config_option="--config" if config else "--preset")
    stage = lambda msg: console.print(f"[dim]{msg}[/]")  # noqa: E731
    if cfg.checkpoints in ("all", "trained"):
        from lmdisp.eval.checkpoints import run_evaluate_checkpoints

        runs = run_evaluate_checkpoints(cfg, stage=stage)
        for run in runs:
            _print_table(run)
        where = runs[0].path.parent if runs else cfg.output
        console.print(f"results: [bold]{where}[/] ({len(runs)} checkpoint(s) evaluated)")
        return
    run = run_evaluate(cfg, stage=stage)
    _print_table(run)
    console.print(f"results: [bold]{run.path}[/]", soft_wrap=True)


def _list_tasks(flags, sets, pattern: str) -> None:
    """`--tasks list` / `--tasks 'list:arc*'`: the names lm-eval knows, with --include-path's."""
    from lmdisp.eval import load_evaluate_config
    from lmdisp.eval.tasks import list_tasks

    cfg = load_evaluate_config(None, {**flags, "tasks": "-"}, sets)  # checks --include-path
    names = list_tasks(cfg.include_path, pattern)
    for name in names:
        console.print(name, highlight=False, markup=False)
    console.print(f"[dim]{len(names)} task(s), group(s) and tag(s) match `{pattern}`[/]")


def _print_table(run) -> None:
    from rich.table import Table

    labels = run.manifest.get("labels", {})
    table = Table(title=f"{run.manifest.get('model')} · seed {run.manifest.get('seed')}",
                  caption=f"report row: {labels.get('base_model')} / {labels.get('method')} · "
                          f"batch size {run.manifest.get('model_info', {}).get('batch_size')} · "
                          f"{run.manifest.get('wall_time_s', 0):.1f} s")
    table.add_column("task", overflow="fold")
    for col in ("metric", "value", "± stderr", "n-shot", "n", "limit"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in run.table.itertuples(index=False):
        limit = "" if row.limit is None or row.limit != row.limit else f"{row.limit:g}"
        table.add_row(row.task, row.metric, f"{row.value:.2f}{row.unit}", f"{row.stderr:.2f}",
                      str(row.n_shot), str(row.n), limit)
    console.print(table)


_PRESET = inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
    Optional[str], typer.Option(help="A named evaluation config: paper (GPT-2 protocol, configs/eval/paper.yaml), "
                                "or an eval YAML. Same as --config.", rich_help_panel="Configuration")])

evaluate = config_command(EvaluateConfig, "evaluate", "Evaluate a model on lm-evaluation-harness tasks (the "
                          "paper's protocol with --preset paper).", _run, extra=[_PRESET])
