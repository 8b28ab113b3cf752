"""Terminal pieces shared by the subcommands: one console, one progress-bar style, and the
training progress bar (a `TrainerCallback`: the library reports, the CLI draws)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=False)


def progress_bar(*extra_columns) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), *extra_columns, console=console, transient=False)


def training_progress():
    """A rich progress bar over optimiser steps showing the latest logged terms and LR."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.bar = progress_bar(TextColumn("{task.fields[info]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar and logs and "ce" in logs:
                terms = "  ".join(f"{k} {logs[k]:.4f}" for k in ("ce", "reg", "kd") if k in logs)
                info = f"{terms}  lr {logs.get('learning_rate', 0):.2e}  {logs.get('tokens_per_s', 0):.0f} tok/s"
                self.bar.update(self.task, info=info)

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def close(self):
            if self.bar:
                self.bar.stop()
                self.bar = None

    return TrainingProgress()


def shard_progress():
    """A callable for `lmdisp.train.shards` reports: a bar over the tokens to write, with the
    tokenising rate. Draws on the main process only (`RANK` 0)."""
    import os

    state = {"bar": None}
    if int(os.environ.get("RANK", "0")) != 0:
        return lambda report: None

    def draw(report: dict) -> None:
        if state["bar"] is None:
            state["bar"] = progress_bar(TextColumn("{task.fields[rate]}"))
            state["bar"].start()
            state["task"] = state["bar"].add_task("token shards", total=report["target"], rate="")
        bar = state["bar"]
        bar.update(state["task"], completed=report["tokens"],
                   rate=f"{report['tokens_per_s']:,.0f} tok/s · {report['records']:,} records")
        if report["done"]:
            bar.stop()
            state["bar"] = None

    return draw
