"""Training telemetry through the Trainer's log: every `report_to` integration (TensorBoard,
Weights & Biases, MLflow, trackio, ...) sees what lmdisp computes, under grouped names.

What the run folder's files hold (metrics.jsonl, condensation.csv) is unchanged; this module
only adds the same numbers to `Trainer.log`, so `state.log_history` and every integration get
them. Names (README, "Telemetry names"):

    train/loss, train/ce, train/regularizer, train/kd, train/tokens_per_s, train/learning_rate, ...
    condensation/layer_07          per-layer mean cosine of the held-out batch (0 = embeddings)
    condensation/heatmap           image: layer x step mean cosine (TensorBoard, W&B, MLflow)
    heldout/loss, heldout/perplexity
    forgetting/resets              active-forgetting resets so far
    benchmark/<task>/<metric>      periodic benchmark scores

Transformers' integrations prefix every name without `eval_`/`test_` with `train/`
(`rewrite_logs`); names that already carry a group (`condensation/...`) would become
`train/condensation/...` and all land in one `train` section. `attach(trainer)` wraps the
integration callbacks of one trainer so that they see each name exactly as listed above, the
same in every integration (MLflow included, which does not rewrite names at all).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

# lmdisp's flat log keys (kept in metrics.jsonl) -> their grouped names in the integrations
RENAMES = {"ce": "train/ce", "reg": "train/regularizer", "kd": "train/kd", "tokens_per_s": "train/tokens_per_s",
           "objective": "train/objective"}
# groups only telemetry records carry: metrics.jsonl keeps its own records for these
TELEMETRY_GROUPS = ("condensation/", "heldout/", "forgetting/", "benchmark/")
HEATMAP = "condensation/heatmap"


def grouped_names(logs: dict[str, Any]) -> dict[str, Any]:
    """The names the integrations get: lmdisp's renames, names with a `/` as they are,
    `eval_x` -> `eval/x`, `test_x` -> `test/x`, any other name -> `train/<name>`."""
    out = {}
    for key, value in logs.items():
        if key in RENAMES:
            key = RENAMES[key]
        elif "/" in key:
            pass
        elif key.startswith(("eval_", "test_")):
            key = key.replace("_", "/", 1)
        else:
            key = f"train/{key}"
        out[key] = value
    return out


def is_telemetry_only(logs: dict[str, Any]) -> bool:
    """A record `emit` made (only telemetry groups and the Trainer's own epoch/token count)."""
    rest = {k for k in logs if not k.startswith(TELEMETRY_GROUPS)} - {"epoch", "num_input_tokens_seen", "step"}
    return not rest and any(k.startswith(TELEMETRY_GROUPS) for k in logs)


def layer_name(layer: int, n_layers: int) -> str:
    """`condensation/layer_07`: zero-padded to the width of the deepest layer (at least 2)."""
    return f"condensation/layer_{layer:0{max(2, len(str(n_layers - 1)))}d}"


@contextlib.contextmanager
def _names_as_given():
    """Within the block, transformers' `rewrite_logs` leaves grouped names (with a `/`) alone."""
    from transformers.integrations import integration_utils as iu

    original = iu.rewrite_logs

    def rewrite(d):
        return {**original({k: v for k, v in d.items() if "/" not in k}), **{k: v for k, v in d.items() if "/" in k}}

    iu.rewrite_logs = rewrite
    try:
        yield
    finally:
        iu.rewrite_logs = original


def _integration_types() -> tuple[type, ...]:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return tuple(INTEGRATION_TO_CALLBACK.values())


def _grouped(on_log):
    def wrapped(args, state, control, logs=None, **kwargs):
        with _names_as_given():
            return on_log(args, state, control, logs=grouped_names(logs or {}), **kwargs)
    wrapped.lmdisp_grouped = True
    return wrapped


class Telemetry:
    """One trainer's telemetry: `emit` scalars through `Trainer.log`, `image` to the
    integrations that take images, and the condensation trace kept for the heatmap."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.trace: dict[int, list[float]] = {}   # step -> per-layer mean cosine

    def emit(self, metrics: dict[str, float]) -> None:
        """Log `metrics` (grouped names) at the current step, through `Trainer.log` itself (a
        trainer's own `log` override would merge its pending metrics into this record)."""
        from transformers import Trainer

        if not metrics:
            return
        # The callback handler's on_log clears `should_log`; a record emitted from on_step_end
        # must not cancel the Trainer's own log of that step.
        should_log = self.trainer.control.should_log
        Trainer.log(self.trainer, dict(metrics))
        self.trainer.control.should_log = should_log

    def condensation(self, step: int, layer_means, heldout: dict[str, float] | None = None) -> None:
        """A held-out snapshot: one scalar per layer, the held-out loss, and the heatmap."""
        means = [float(v) for v in layer_means]
        metrics = {layer_name(i, len(means)): v for i, v in enumerate(means)}
        metrics.update({f"heldout/{k}": v for k, v in (heldout or {}).items()})
        self.emit(metrics)
        self.trace[step] = means
        if self.trainer.state.is_world_process_zero:
            self.image(HEATMAP, heatmap_image(self.trace), step)

    def image(self, name: str, image: np.ndarray, step: int) -> None:
        """An HWC uint8 image to TensorBoard (add_image), W&B (wandb.Image) and MLflow
        (log_image); the other integrations take no images."""
        from transformers.integrations.integration_utils import MLflowCallback, TensorBoardCallback, WandbCallback

        for cb in self.trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
                cb.tb_writer.add_image(name, image, step, dataformats="HWC")
                cb.tb_writer.flush()
            elif isinstance(cb, WandbCallback) and getattr(cb, "_initialized", False):
                cb._wandb.log({name: cb._wandb.Image(image), "train/global_step": step})
            elif isinstance(cb, MLflowCallback) and getattr(cb, "_initialized", False):
                cb._ml_flow.log_image(image, key=name, step=step)


def heatmap_image(trace: dict[int, list[float]], cell: int = 8) -> np.ndarray:
    """Layer x step mean cosine as an RGB uint8 image: one column per snapshot (in step
    order), one row per layer (layer 0, the embeddings, at the bottom), viridis on a fixed
    [0, 1] scale so that images at different steps compare; each cell `cell` pixels square."""
    from matplotlib import colormaps

    steps = sorted(trace)
    depth = max(len(v) for v in trace.values())
    grid = np.full((depth, len(steps)), np.nan)
    for j, step in enumerate(steps):
        grid[:len(trace[step]), j] = trace[step]
    rgb = colormaps["viridis"](np.clip(np.nan_to_num(grid[::-1], nan=0.0), 0, 1))[..., :3]
    return (np.kron(rgb, np.ones((cell, cell, 1))) * 255).round().astype(np.uint8)


def attach(trainer) -> Telemetry:
    """Give `trainer` its telemetry: integration callbacks see grouped names, and every
    callback with a `telemetry` attribute (condensation tracker, evaluation hook, active
    forgetting) reports through it. Idempotent."""
    telemetry = getattr(trainer, "telemetry", None) or Telemetry(trainer)
    trainer.telemetry = telemetry
    kinds = _integration_types()
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, kinds) and not getattr(cb.on_log, "lmdisp_grouped", False):
            cb.on_log = _grouped(cb.on_log)
        if hasattr(cb, "telemetry"):
            cb.telemetry = telemetry
    return telemetry


def tensorboard_dir(trainer, path) -> None:
    """TensorBoard event files in `path` (the run folder's `tensorboard/`) rather than
    transformers' default under the checkpoints; `TENSORBOARD_LOGGING_DIR` still wins."""
    from transformers.integrations.integration_utils import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(path)


def benchmark_metrics(run) -> dict[str, float]:
    """`benchmark/<task>/<metric>` from an `EvaluateRun`'s per-task table (numbers only)."""
    out = {}
    table = getattr(run, "table", None)
    if table is None or not len(table):
        return out
    for row in table.to_dict("records"):
        task, metric, value = row.get("task"), row.get("metric"), row.get("value")
        if task is not None and metric is not None and isinstance(value, (int, float)) and value == value:
            out[f"benchmark/{task}/{metric}"] = float(value)
    return out
