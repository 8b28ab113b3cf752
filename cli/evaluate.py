"""`lmdisp evaluate`: load the config, call `lmdisp.eval.run_evaluate`, print the table.

    lmdisp evaluate --tasks arc_easy,mmlu                        # the bundled SmolLM2-135M
    lmdisp evaluate --model results/midtrain/<run> --preset paper
    lmdisp evaluate results/midtrain/<run> --preset paper --checkpoints all   # every checkpoint (= --model RUN)
    lmdisp evaluate --model gpt2 --preset paper --tasks arc_easy,piqa --limit 100 --seed 2
    lmdisp evaluate --tasks my_task --include-path my_tasks/     # your own YAML + local data, offline
    lmdisp evaluate --list-tasks 'arc*' --include-path my_tasks/ # the task names lm-eval knows
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from lmdisp.cli.options import config_command
from lmdisp.cli.session import quiet_stderr
from lmdisp.cli.ui import console, progress_bar
from lmdisp.eval.config import EvaluateConfig


def _run(config, sets, flags, list_tasks=None, model_arg=None) -> None:
    import logging

    from lmdisp.errors import ConfigError, Interrupted
    from lmdisp.eval import load_evaluate_config, run_evaluate

    if model_arg is not None:  # `lmdisp evaluate RUN` (litgpt's `evaluate CHECKPOINT_DIR`) = `--model RUN`
        if flags.get("model") not in (None, model_arg):
            raise ConfigError(f"two models given: {model_arg} and --model {flags['model']}; give one")
        flags = {**flags, "model": model_arg}
    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # its per-call INFO chatter (warnings go to lmdisp.log)
    listing = str(flags.get("tasks", ""))
    if listing == "list" or listing.startswith("list:"):  # the old spelling
        raise ConfigError(f"--tasks {listing} is now --list-tasks {listing.partition(':')[2] or '*'!r} "
                          "(--tasks names the tasks to run)")
    if list_tasks is not None:
        _list_tasks(flags, sets, list_tasks or "*")
        return
    cfg = load_evaluate_config(config, flags, sets, config_option="--config/--preset")
    try:
        with request_progress() as (stage, progress), quiet_stderr():  # lm-eval's own tqdm bars: to the log
            if cfg.checkpoints in ("all", "trained"):
                _run_checkpoints(cfg, stage, progress)
                return
            run = run_evaluate(cfg, stage=stage, progress=progress)
    except Interrupted as exc:  # Ctrl-C, or SIGTERM (Terminated keeps its exit code)
        if exc.output is None:
            raise
        raise type(exc)(f"{exc.message}; continue with: {resume_command(exc.output)}") from None
    _print_table(run)
    console.print(f"results: [bold]{run.path}[/]", soft_wrap=True)


def _run_checkpoints(cfg, stage, progress) -> None:
    from lmdisp.eval.checkpoints import run_evaluate_checkpoints

    runs = run_evaluate_checkpoints(cfg, stage=stage, progress=progress)
    for run in runs:
        _print_table(run)
    if not runs:
        console.print(f"all {len(runs.skipped)} checkpoint(s) already evaluated in [bold]{runs.path}[/] "
                      f"(steps {', '.join(map(str, runs.skipped))}); nothing to do", soft_wrap=True)
        return
    skipped = f", {len(runs.skipped)} already done" if runs.skipped else ""
    console.print(f"results: [bold]{runs.path}[/] ({len(runs)} checkpoint(s) evaluated{skipped})", soft_wrap=True)


@contextmanager
def request_progress():
    """(stage, progress) callbacks for `run_evaluate`: a dim line per stage, and a bar per
    batch of requests (answered / asked, answers per second)."""
    from rich.progress import TextColumn

    with progress_bar(TextColumn("{task.fields[info]}")) as bar:
        state = {"label": "evaluate", "task": None}

        def stage(msg: str) -> None:
            bar.console.print(f"[dim]{msg}[/]", soft_wrap=True)
            if msg.startswith("evaluating "):
                state["label"] = msg.removeprefix("evaluating ").split(" (")[0]

        def progress(kind: str, done: int, total: int, rate: float) -> None:
            if done == 0:
                state["task"] = bar.add_task(f"{state['label']} · {kind}", total=total, info="")
            bar.update(state["task"], completed=done, info=f"{rate:.1f} requests/s" if rate else "")

        yield stage, progress


def resume_command(output) -> str:
    """The command line as typed, with `--output OUTPUT` (replacing any other): what continues it."""
    import shlex
    import sys

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("-o", "--output"):
            skip = True
        elif not arg.startswith("--output=") and not (arg.startswith("-o") and not arg.startswith("--")):
            args.append(arg)
    return shlex.join(["lmdisp", *args, "--output", str(output)])


def _list_tasks(flags, sets, pattern: str) -> None:
    """`--list-tasks 'arc*'`: the names lm-eval knows, with --include-path's."""
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


_LIST = inspect.Parameter("list_tasks", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
    Optional[str], typer.Option("--list-tasks", metavar="PATTERN", help="Print the task names lm-eval knows "
                                "(with --include-path's) matching a glob ('*' for all), and stop.",
                                rich_help_panel="Tasks")])

_MODEL = inspect.Parameter("model_arg", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
    Optional[str], typer.Argument(metavar="MODEL", show_default=False,
                                  help="The model to evaluate, as --model (a training run folder: its final/).")])

evaluate = config_command(EvaluateConfig, "evaluate", "Evaluate a model on lm-evaluation-harness tasks (the "
                          "paper's protocol with --preset paper; --preset is --config: a shipped evaluation "
                          "config or a YAML).", _run, extra=[_LIST, _MODEL], config_names=("--config", "-c", "--preset"))
