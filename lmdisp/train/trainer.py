"""The one trainer: `transformers.Trainer` plus a hidden-state regulariser.

`midtrain`, `pretrain` and `distill` all run through `DispersionTrainer` and `TrainConfig`;
they differ only in where the weights start (and, for `distill`, the extra teacher term).
Because it is a `Trainer`, the same command runs unchanged under `accelerate launch` /
`torchrun` for DDP, FSDP or DeepSpeed.

The regulariser follows `trl`'s pattern: `compute_loss` asks the model for its hidden
states, lets the parent compute (and normalise) the cross-entropy, then adds
`lambda * regulariser`. With the regulariser off, `compute_loss` *is* the parent's.
Auxiliary metrics are kept by name (trl's `_metrics`), summed on the device, and moved to
the host, reduced over processes and checked for NaN/inf only at logging steps (and before
a checkpoint is written), so training never waits on the host between micro-steps.
"""

from __future__ import annotations

import time

import torch
from transformers import Trainer

from lmdisp.errors import LmdispError
from lmdisp.train.config import LOSS_OPTIONS, TrainConfig
from lmdisp.train.losses import regularizer


# The private (or undocumented) members of `transformers.Trainer` that DispersionTrainer
# overrides or reads, checked against transformers 5.24.0 (pyproject's floor). A test checks
# each still exists in the installed version; read their source again when raising the floor.
TRAINER_INTERNALS_CHECKED = "5.24.0"
TRAINER_INTERNALS = {
    "_save_checkpoint": "overridden: no checkpoint of weights a NaN has reached; files made readable",
    "_created_lr_scheduler": "set with the active-forgetting scheduler, so train() rebuilds it as it would its own",
    "loss_is_scaled_for_ga": "read: whether compute_loss's loss is already normalised over the accumulated batch",
    "model_accepts_loss_kwargs": "read: the parent's test for the same, when loss_is_scaled_for_ga is None",
    "compute_loss_func": "read: idem",
    "current_gradient_accumulation_steps": "read: micro-batches in the current optimiser step",
}


class NonFiniteLoss(LmdispError):
    """The loss became NaN or infinite; the run stops keeping its last good checkpoint."""


class DispersionTrainer(Trainer):
    """`Trainer` whose loss is cross-entropy + lambda * regulariser(hidden states)."""

    ce_weight = 1.0

    def __init__(self, *args, run_config: TrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self._metrics: dict[str, torch.Tensor] = {}  # name -> sum on the device since the last log
        self._micro = (-1, 0)                         # (global step, micro-batch) for the subsample seed
        self._train_start = self._last_log_time = time.perf_counter()
        self._last_logged_step = 0
        from lmdisp.train.telemetry import attach

        attach(self)  # the integrations see grouped names; lmdisp's callbacks log through it

    # -- the loss ---------------------------------------------------------------------

    def has_auxiliary(self) -> bool:
        return self.run_config.has_regularizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.has_auxiliary() or not model.training:
            loss_out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self._track(loss_out[0] if return_outputs else loss_out, {}, inputs, num_items_in_batch)
            return loss_out
        if self.run_config.has_regularizer:
            inputs = {**inputs, "output_hidden_states": True}
        ce, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        terms = self.auxiliary_terms(model, inputs, outputs)
        # Per-micro-batch means are scaled the way HF scales the model's own loss: when the
        # CE is already normalised over the whole accumulated batch, training_step does not
        # divide by the accumulation steps, so these terms must be divided here.
        scale = 1 / self._ga_steps if self._loss_scaled_for_ga(num_items_in_batch) else 1
        total = self.ce_weight * ce + scale * sum(weight * value for weight, value in terms.values())
        self._track(ce, terms, inputs, num_items_in_batch)
        return (total, outputs) if return_outputs else total

    def auxiliary_terms(self, model, inputs, outputs) -> dict[str, tuple[float, torch.Tensor]]:
        """name -> (weight, per-micro-batch mean value): here the hidden-state regulariser."""
        cfg = self.run_config
        if not cfg.has_regularizer:
            return {}
        reg = regularizer(outputs.hidden_states, inputs.get("attention_mask"), cfg.loss,
                          location=cfg.location, max_tokens=cfg.max_tokens, generator=self._generator(),
                          **self._loss_options())
        return {"reg": (cfg.lambda_disp, reg)}

    @property
    def _ga_steps(self) -> int:
        """Micro-batches in the current optimiser step (set by `Trainer.train`)."""
        return getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)

    def _loss_options(self) -> dict[str, float]:
        cfg = self.run_config
        return {name: getattr(cfg, name) for name in LOSS_OPTIONS[cfg.loss] if name in ("tau", "clamp")}

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                    or self.compute_loss_func is not None)

    def _generator(self) -> torch.Generator:
        """A generator seeded by (seed, rank, step, micro-batch): the token subsample is
        reproducible and a resumed run draws exactly what an uninterrupted one would."""
        step = self.state.global_step
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        seed = hash((self.run_config.seed, self.args.process_index, step, micro)) % (2**63)
        return torch.Generator().manual_seed(seed)

    # -- metrics by name, on the device until a log ------------------------------------------

    def _track(self, ce, terms, inputs, num_items_in_batch=None) -> None:
        ga = self._ga_steps
        values = {"ce": ce.detach().float() / (1 if self._loss_scaled_for_ga(num_items_in_batch) else ga)}
        values.update({name: value.detach().float() / ga for name, (_, value) in terms.items()})
        values["tokens"] = torch.tensor(float(inputs["input_ids"].numel()), device=values["ce"].device)
        for name, value in values.items():
            self._metrics[name] = self._metrics[name] + value if name in self._metrics else value

    def _flush_metrics(self) -> dict[str, float]:
        """Sums since the last log, reduced over processes (means; tokens stay a sum), on the
        host. Raises NonFiniteLoss naming the steps if any is NaN or infinite."""
        if not self._metrics:
            return {}
        names = list(self._metrics)
        sums = torch.stack([self._metrics[n].to(self.args.device) for n in names])
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
            sums = torch.where(torch.tensor([n != "tokens" for n in names], device=sums.device),
                               sums / self.args.world_size, sums)
        host = dict(zip(names, sums.tolist()))
        self._metrics = {}
        if not all(torch.isfinite(torch.tensor(v)) for v in host.values()):
            first, last = self._last_logged_step + 1, self.state.global_step
            steps = f"step {first}" if first >= last else f"steps {first}-{last}"
            shown = ", ".join(f"{k}={v:.4g}" for k, v in host.items() if k != "tokens")
            raise NonFiniteLoss(f"non-finite loss at {steps} ({shown}); stopped, the last good checkpoint "
                                f"is kept in {self.args.output_dir}")
        return host

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            host = self._flush_metrics()
            steps = max(self.state.global_step - self._last_logged_step, 1)
            now = time.perf_counter()
            for name, value in host.items():
                if name != "tokens":
                    logs[name] = round(value / steps, 6)
            logs["tokens_per_s"] = round(host.get("tokens", 0.0) / max(now - self._last_log_time, 1e-9), 1)
            self._last_logged_step, self._last_log_time = self.state.global_step, now
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        if self._metrics:  # never write a checkpoint of weights a NaN has already reached
            sums = torch.stack([v.to(self.args.device) for v in self._metrics.values()])
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            if not bool(torch.isfinite(sums).all()):
                self._flush_metrics()
        from lmdisp.train.checkpoints import save_checkpoint

        return save_checkpoint(self, lambda: super(DispersionTrainer, self)._save_checkpoint(model, trial))

    def train(self, *args, **kwargs):
        self._train_start = self._last_log_time = time.perf_counter()
        return super().train(*args, **kwargs)

    # -- active forgetting: the input embeddings get their own group and schedule ------------

    def create_optimizer(self, model=None):
        if self.run_config.loss != "active-forgetting":
            return super().create_optimizer(model)
        from lmdisp.train.forgetting import forgetting_optimizer

        self.optimizer = forgetting_optimizer(self)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.run_config.loss != "active-forgetting":
            return super().create_scheduler(num_training_steps, optimizer)
        from lmdisp.train.forgetting import forgetting_scheduler

        self.lr_scheduler = forgetting_scheduler(self, optimizer or self.optimizer, num_training_steps)
        self._created_lr_scheduler = True
        return self.lr_scheduler
