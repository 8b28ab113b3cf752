"""Terminal pieces shared by the subcommands: one console, one progress style, the training
progress (a `TrainerCallback`: the library reports, the CLI draws), and where the libraries'
own notices go.

By default the terminal shows lmdisp's progress and results only. Everything the libraries
log (transformers, datasets, lm-eval, peft, accelerate, Python warnings) goes to
`lmdisp.log` in the run folder, and also to the terminal with `--verbose`, which also brings
back their progress bars. When stdout is not a terminal (a log file, CI, `| tee`), progress
is printed as plain lines at every 10% instead of a bar.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console

from lmdisp.runs import LOG_FILE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=False)
_LIBRARIES = ("transformers", "datasets", "huggingface_hub", "lm_eval", "lm-eval", "peft", "accelerate", "torch",
              "urllib3", "filelock", "fsspec", "evaluate", "py.warnings")


# ----------------------------------------------------------------------------- notices

class RunLog(logging.Handler):
    """Every log record, kept in memory until a run folder is announced (a record with
    `extra={"run_folder": path}`, logged by `lmdisp.runs`), then written to `<run>/lmdisp.log`."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.file = None

    def emit(self, record: logging.LogRecord) -> None:
        folder = getattr(record, "run_folder", None)
        if folder is not None and self.file is None:
            try:
                self.file = open(Path(folder) / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
                self.file.writelines(self.lines)
                self.lines = []
            except OSError:
                self.file = None
        text = self.format(record) + "\n"
        if self.file is not None:
            self.file.write(text)
            self.file.flush()
        else:
            self.lines.append(text)


    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        super().close()


class _Notes(logging.Handler):
    """lmdisp's own warnings (`logging.getLogger("lmdisp")`): one `note:` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        console.print(f"[yellow]note:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


def setup_logging(verbose: bool = False) -> RunLog:
    """Route the libraries' notices to the run's log file (and the terminal with `verbose`)."""
    import warnings

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if isinstance(h, (RunLog, _Notes)) or getattr(h, "_lmdisp", False):
            root.removeHandler(h)
            h.close()
    log = RunLog()
    root.addHandler(log)
    for module in ("transformers.utils.logging", "datasets", "huggingface_hub"):
        try:  # imported now, so that the stderr handlers they add on import exist to be removed
            __import__(module)
        except ImportError:  # pragma: no cover
            pass
    for name in _LIBRARIES:  # the libraries' own stderr handlers: their records now reach ours
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        lib.propagate = True
    own = logging.getLogger("lmdisp")
    own.setLevel(logging.INFO)
    for h in list(own.handlers):
        own.removeHandler(h)
        h.close()
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    if verbose:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        stream._lmdisp = True
        root.addHandler(stream)
    else:
        own.addHandler(_Notes(logging.WARNING))
        _quiet_progress_bars()
    _quiet_transformers(verbose)
    return log


def _quiet_progress_bars() -> None:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _silence_tqdm()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _silence_tqdm() -> None:
    """lm-eval draws tqdm bars with an explicit `disable=False`, and tqdm reads TQDM_DISABLE
    only when it is first imported: turn every tqdm bar of this process off at its source."""
    try:
        import tqdm.std
    except ImportError:  # pragma: no cover
        return
    init = tqdm.std.tqdm.__init__
    if getattr(init, "_lmdisp_quiet", False):
        return

    def quiet_init(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    quiet_init._lmdisp_quiet = True
    tqdm.std.tqdm.__init__ = quiet_init


def _quiet_transformers(verbose: bool) -> None:
    """transformers keeps its own stderr handler and bars; send its records to ours."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover
        return
    tlog.disable_default_handler()
    tlog.enable_propagation()
    if not verbose:
        tlog.disable_progress_bar()


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
        for task in self.tasks.values():
            if task["printed"] != task["completed"]:
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
        if not total:
            return float("inf")
        step = max(1, round(total * self.every))
        return min(total, (done // step + 1) * step)

    def _print(self, task: dict) -> None:
        done, total = task["completed"], task["total"]
        elapsed = time.time() - task["start"]
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        info = task["fields"].get("info", "")
        line = f"{task['description']} {done}/{total}{pct} {elapsed:.0f}s" + (f"  {info}" if info else "")
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        task["printed"], task["last"] = done, time.time()


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
            if self.bar:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar and logs and ("ce" in logs or "objective" in logs):  # midtrain / sft, dpo, grpo
                terms = "  ".join(f"{k} {logs[k]:.4f}" for k in ("ce", "objective", "reg", "kd") if k in logs)
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
