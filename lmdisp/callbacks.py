"""Trainer callbacks: metrics log, condensation tracking, active forgetting, evaluation hook,
progress bar. Only the main process writes files; computations that need every rank (a
forward pass under FSDP) run on all of them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def _truncate_after(path: Path, step: int, step_of) -> None:
    """Drop records logged after `step` (a resumed run rewrites them) and a last line that a
    kill cut in half."""
    if not path.is_file():
        return

    def keep(i: int, line: str) -> bool:
        if i == 0 and not line.lstrip().startswith("{"):
            return True  # a CSV header
        try:
            return line.endswith("\n") and step_of(line) <= step
        except (ValueError, KeyError, IndexError):
            return False

    lines = path.read_text().splitlines(keepends=True)
    from lmdisp.results import write_text

    write_text(path, "".join(ln for i, ln in enumerate(lines) if keep(i, ln)))


class JsonlLogger(TrainerCallback):
    """`metrics.jsonl`: one JSON object per logging step (ce, reg, loss, lr, tokens/s, ...)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            _truncate_after(self.path, state.global_step, lambda ln: json.loads(ln).get("step", 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
                      "time": round(time.time(), 3)}
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


class CondensationTracker(TrainerCallback):
    """Every `every` steps, per-layer mean cosine similarity on a fixed held-out batch,
    appended to `condensation.csv` (step, layer, layer_fraction, mean_cos)."""

    def __init__(self, path: Path, batch: dict[str, torch.Tensor], every: int):
        self.path, self.batch, self.every = Path(path), batch, every

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            _truncate_after(self.path, state.global_step, lambda ln: int(ln.split(",")[0]))
        if state.global_step == 0:
            self._snapshot(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._snapshot(args, state, model)

    @torch.no_grad()
    def _snapshot(self, args, state, model) -> None:
        from lmdisp.condensation import CondensationAccumulator

        was_training = model.training
        model.eval()
        acc = CondensationAccumulator()
        device = next(model.parameters()).device
        for start in range(0, len(self.batch["input_ids"]), args.per_device_train_batch_size):
            piece = {k: v[start:start + args.per_device_train_batch_size].to(device)
                     for k, v in self.batch.items() if k != "labels"}
            acc.update(model(**piece, output_hidden_states=True).hidden_states)
        model.train(was_training)
        if not state.is_world_process_zero:
            return
        m = acc.result().layer_means
        new = not self.path.is_file()
        with self.path.open("a") as fh:
            if new:
                fh.write("step,layer,layer_fraction,mean_cos\n")
            for layer, value in enumerate(m):
                fh.write(f"{state.global_step},{layer},{layer / max(len(m) - 1, 1):.6g},{value:.8g}\n")


def split_embedding_params(model) -> tuple[set[str], list[str]]:
    """(names of body parameters, names of the input-embedding parameters)."""
    emb = model.get_input_embeddings().weight
    names = [n for n, p in model.named_parameters() if p is emb]
    return {n for n, _ in model.named_parameters()} - set(names), names


def cosine_with_warmup(warmup: int, total: int):
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
    return factor


def forgetting_cycle(warmup: int, every: int):
    """The embeddings' own multiplier, restarted at each reset: warm-up, then linear decay."""
    def factor(step: int) -> float:
        t = step % every
        if t < warmup:
            return (t + 1) / max(1, warmup)
        return max(0.0, (every - t) / max(1, every - warmup))
    return factor


class ActiveForgetting(TrainerCallback):
    """Every `every` steps, re-initialise the input embeddings from N(0, 0.02) and clear their
    optimiser state (Chen et al. 2023). Seeded by (seed, step), so a resumed run resets alike."""

    def __init__(self, every: int, seed: int, std: float = 0.02):
        self.every, self.seed, self.std = every, seed, std

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        step = state.global_step
        if step == 0 or step % self.every:
            return
        weight = model.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(hash((self.seed, step)) % (2**63))
        with torch.no_grad():
            weight.copy_((torch.randn(weight.shape, generator=gen) * self.std).to(weight))
        if optimizer is not None:
            optimizer.state.pop(weight, None)


class EvalHook(TrainerCallback):
    """Benchmark evaluation at the start, every `every` steps and at the end, through
    `lmdisp.evaluation` (the `evaluate` command's module). Off until that module exists."""

    def __init__(self, every: int, tasks: str | None, run_dir: Path, **overrides):
        self.every, self.tasks, self.run_dir = every, tasks, Path(run_dir)
        self.overrides = {k: v for k, v in overrides.items() if v is not None}  # EvaluateConfig fields
        self.available = _evaluation_module() is not None

    def _maybe(self, state, model, tokenizer, when: str) -> None:
        if not (self.available and self.tasks and state.is_world_process_zero):
            return
        module = _evaluation_module()
        module.evaluate_in_training(model, tokenizer, self.tasks, self.run_dir / "evals" / f"{when}", **self.overrides)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.available and self.tasks and _sharded():
            # The hook evaluates on the main process alone; FSDP/DeepSpeed-sharded weights
            # would need every rank, and the run would hang. Say so once and evaluate later.
            if state.is_world_process_zero:
                import warnings

                warnings.warn("periodic evaluation is off under FSDP/DeepSpeed sharding; evaluate the "
                              "checkpoints with `lmdisp evaluate` afterwards", stacklevel=1)
            self.available = False
        if state.global_step == 0:
            self._maybe(state, model, processing_class, "step-0")

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._maybe(state, model, processing_class, f"step-{state.global_step}")

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._maybe(state, model, processing_class, f"step-{state.global_step}")


def _sharded() -> bool:
    """True under FSDP or DeepSpeed, where no single process holds the whole model."""
    try:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        return PartialState().distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    except (ImportError, ValueError):
        return False


def _evaluation_module():
    import importlib.util

    if importlib.util.find_spec("lmdisp.evaluation") is None:
        return None
    import importlib

    return importlib.import_module("lmdisp.evaluation")


class RichProgress(TrainerCallback):
    """A rich progress bar over optimiser steps, showing the latest ce / regulariser / LR."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.bar.start()
        self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar and logs and "ce" in logs:
            info = f"ce {logs['ce']:.4f}  reg {logs['reg']:.4f}  lr {logs.get('learning_rate', 0):.2e}  " \
                   f"{logs.get('tokens_per_s', 0):.0f} tok/s"
            self.bar.update(self.task, info=info)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar:
            self.bar.stop()
            self.bar = None
