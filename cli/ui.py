"""Terminal pieces shared by the subcommands: one console, one progress style, and the
training progress (a `TrainerCallback`: the library reports, the CLI draws). Where the
libraries' notices go is `lmdisp.cli.session`. When stdout is not a terminal (a log file,
CI, `| tee`), progress is printed as plain lines at every 10% instead of a bar.
"""

from __future__ import annotations

import time

from rich.console import Console

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=False)


# ----------------------------------------------------------------------------- progress

def progress_bar(*extra_columns):
    """A rich progress bar on a terminal; plain periodic lines otherwise."""
    if not console.is_terminal:
        return PlainProgress()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), *extra_columns, console=console, transient=False)


class PlainProgress:
    """The subset of `rich.progress.Progress` lmdisp uses, printing one line per task at every
    10%, at least every `interval` seconds, and at the end, instead of redrawing a bar:
    readable in a log file."""

    def __init__(self, every: float = 0.1, interval: float = 60.0):
        self.console, self.every, self.interval = console, every, interval
        self.tasks: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task in self.tasks.values():  # the end, or a value logged since the last line
            if task["printed"] != task["completed"] or task["fields"].get("info", "") != task.get("info_printed", ""):
                self._print(task)

    def add_task(self, description: str, total: int | None = None, completed: int = 0, **fields) -> int:
        tid = len(self.tasks)
        now = time.time()
        self.tasks[tid] = {"description": description, "total": total, "completed": completed, "fields": fields,
                           "start": now, "last": now, "printed": completed, "next": self._next(completed, total)}
        return tid

    def update(self, task_id: int, completed: int | None = None, **fields) -> None:
        task = self.tasks[task_id]
        task["fields"].update(fields)
        if completed is not None:
            task["completed"] = completed
        due = time.time() - task["last"] >= self.interval and task["completed"] != task["printed"]
        if (task["total"] and task["completed"] >= task["next"]) or due:
            self._print(task)
            task["next"] = self._next(task["completed"], task["total"])

    def _next(self, done: int, total: int | None) -> float:
        if not total or done >= total:  # done: later updates (a last log) print nothing until stop()
            return float("inf")
        step = max(1, round(total * self.every))
        return min(total, (done // step + 1) * step)

    def _print(self, task: dict) -> None:
        done, total = task["completed"], task["total"]
        elapsed = time.time() - task["start"]
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        info = task["fields"].get("info", "")
        fresh = info if info != task.get("info_printed") else ""  # a value already printed is not repeated
        line = f"{task['description']} {done}/{total}{pct} {elapsed:.0f}s" + (f"  {fresh}" if fresh else "")
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        task["printed"], task["last"], task["info_printed"] = done, time.time(), info


def training_progress():
    """A progress bar over optimiser steps showing the latest logged terms and LR."""
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
            if self.bar and state.global_step < state.max_steps:  # the last one: at on_train_end, with its log
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar and logs and ("ce" in logs or "objective" in logs):  # midtrain / sft, dpo, grpo
                terms = "  ".join(f"{k} {logs[k]:.4f}" for k in ("ce", "objective", "reg", "kd") if k in logs)
                info = f"{terms}  lr {logs.get('learning_rate', 0):.2e}  {logs.get('tokens_per_s', 0):.0f} tok/s"
                self.bar.update(self.task, info=info)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar:
                self.bar.update(self.task, completed=state.global_step)
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
