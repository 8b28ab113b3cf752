"""Trainer callbacks: metrics log, condensation tracking, evaluation hook. (Active forgetting
lives in `forgetting`, the progress bar in the CLI.) Only the main process writes files;
computations that need every rank (a forward pass under FSDP) run on all of them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from lmdisp.jsontext import json_text


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
    from lmdisp.runs import write_text

    write_text(path, "".join(ln for i, ln in enumerate(lines) if keep(i, ln)))


class JsonlLogger(TrainerCallback):
    """`metrics.jsonl`: one JSON object per logging step (ce, reg, loss, lr, tokens/s, ...)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            _truncate_after(self.path, state.global_step, lambda ln: json.loads(ln).get("step", 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        from lmdisp.train.telemetry import is_telemetry_only

        # telemetry records (condensation/..., heldout/...) repeat what this file and
        # condensation.csv already hold in their own records
        if state.is_world_process_zero and logs and not is_telemetry_only(logs):
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
                      "time": round(time.time(), 3)}
            with self.path.open("a") as fh:
                fh.write(json_text(record) + "\n")


class CondensationTracker(TrainerCallback):
    """Every `every` steps, on a fixed held-out batch: per-layer mean cosine similarity,
    appended to `condensation.csv` (step, layer, layer_fraction, mean_cos), and the held-out
    next-token loss and perplexity (exp of the loss), appended to `metrics.jsonl` as
    `{"step", "heldout_loss", "heldout_perplexity"}` records. The loss is the mean over all
    predicted tokens of the batch (every block has the same length, so the mean of the
    per-piece means weighted by their sizes). The same numbers go through the Trainer's log
    (`condensation/layer_NN`, `heldout/loss`, `heldout/perplexity`) when the trainer has
    attached its `telemetry` (`lmdisp.train.telemetry`)."""

    telemetry = None

    def __init__(self, path: Path, batch: dict[str, torch.Tensor], every: int, metrics: Path | None = None):
        self.path, self.batch, self.every = Path(path), batch, every
        self.metrics = Path(metrics) if metrics else None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            _truncate_after(self.path, state.global_step, lambda ln: int(ln.split(",")[0]))
            if self.telemetry is not None and self.path.is_file():  # a resumed run's heatmap keeps its past
                for line in self.path.read_text().splitlines()[1:]:
                    step, layer, _, value = line.split(",")
                    self.telemetry.trace.setdefault(int(step), []).append(float(value))
        if state.global_step == 0:
            self._snapshot(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._snapshot(args, state, model)

    @torch.no_grad()
    def _snapshot(self, args, state, model) -> None:
        import math

        from lmdisp.measure.condensation import CondensationAccumulator

        was_training = model.training
        model.eval()
        acc = CondensationAccumulator()
        device = next(model.parameters()).device
        size, total = args.per_device_train_batch_size, len(self.batch["input_ids"])
        loss_sum = 0.0
        for start in range(0, total, size):
            piece = {k: v[start:start + size].to(device) for k, v in self.batch.items()}
            out = model(**piece, output_hidden_states=True)
            acc.update(out.hidden_states)
            if getattr(out, "loss", None) is not None:
                loss_sum += float(out.loss) * len(piece["input_ids"])
        model.train(was_training)
        if not state.is_world_process_zero:
            return
        m = acc.result().layer_means
        heldout = None
        if "labels" in self.batch:
            loss = loss_sum / total
            heldout = {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 700.0)), 4)}
        if self.telemetry is not None:
            self.telemetry.condensation(state.global_step, m, heldout)
        new = not self.path.is_file()
        with self.path.open("a") as fh:
            if new:
                fh.write("step,layer,layer_fraction,mean_cos\n")
            for layer, value in enumerate(m):
                fh.write(f"{state.global_step},{layer},{layer / max(len(m) - 1, 1):.6g},{value:.8g}\n")
        if self.metrics is not None and heldout is not None:
            record = {"step": state.global_step, "heldout_loss": heldout["loss"],
                      "heldout_perplexity": heldout["perplexity"], "time": round(time.time(), 3)}
            with self.metrics.open("a") as fh:
                fh.write(json_text(record) + "\n")


class EvalHook(TrainerCallback):
    """Benchmark evaluation at the start, every `every` steps and at the end, through
    `lmdisp.eval` (the `evaluate` command's module), labelled with the run's report labels;
    the scores also go through the Trainer's log as `benchmark/<task>/<metric>`."""

    telemetry = None

    def __init__(self, every: int, tasks: str | None, run_dir: Path, labels: dict | None = None, **overrides):
        self.every, self.tasks, self.run_dir, self.labels = every, tasks, Path(run_dir), labels or {}
        self.overrides = {k: v for k, v in overrides.items() if v is not None}  # EvaluateConfig fields
        self.available = True

    def _maybe(self, state, model, tokenizer, when: str) -> None:
        if not (self.available and self.tasks and state.is_world_process_zero):
            return
        from lmdisp.eval.harness import evaluate_in_training

        run = evaluate_in_training(model, tokenizer, self.tasks, self.run_dir / "evals" / when,
                                   labels=self.labels, **self.overrides)
        if self.telemetry is not None:
            from lmdisp.train.telemetry import benchmark_metrics

            self.telemetry.emit(benchmark_metrics(run))

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
        # The last step's evaluation runs here, not at train end: the integrations close their
        # runs in their own on_train_end, before this callback's, and the scores would miss them.
        step = state.global_step
        if (self.every and step % self.every == 0) or step == state.max_steps:
            self._maybe(state, model, processing_class, f"step-{step}")
            self._evaluated = step

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        from lmdisp import preempt

        if preempt.stopping():  # SIGTERM: the checkpoint is what counts in the grace left
            return
        if getattr(self, "_evaluated", None) != state.global_step:  # stopped before max_steps
            self._maybe(state, model, processing_class, f"step-{state.global_step}")


def _sharded() -> bool:
    """True under FSDP or DeepSpeed, where no single process holds the whole model."""
    try:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        return PartialState().distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    except (ImportError, ValueError):
        return False


class StopOnSigterm(TrainerCallback):
    """At the end of the step in which SIGTERM arrived (on any process: `lmdisp.preempt`):
    save a checkpoint and stop training."""

    def __init__(self):
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        from lmdisp import preempt

        if self.stopped_at is None and preempt.agreed(args):
            self.stopped_at = state.global_step
            preempt.stop_at(state.global_step)
            control.should_save = True
            control.should_training_stop = True
        return control
