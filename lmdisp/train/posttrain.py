"""The dispersion loss (any registered regulariser) inside TRL's trainers: SFT, DPO, GRPO.

    from trl import SFTTrainer
    from lmdisp.train.posttrain import Regularizer, with_regularizer

    Trainer = with_regularizer(SFTTrainer)            # or DPOTrainer, GRPOTrainer, your subclass
    trainer = Trainer(model=model, args=SFTConfig(...), train_dataset=data,
                      regularizer=Regularizer("dispersion", weight=0.1))
    trainer.train()

How: TRL's trainers run their forward through a fused LM head that keeps no hidden states,
and GRPO builds its model inputs inside its loss. So the regulariser does not ask TRL for
them: while TRL's own `compute_loss` runs, a forward pre-hook on the model's backbone asks for
`output_hidden_states` and a forward hook keeps them (only forwards with gradients: not the
reference model, not generation, not the old-policy log-probs). Then
`loss = TRL's loss + scale * weight * regulariser(hidden states, selected tokens)`, with
`scale` = 1 / accumulation steps exactly when the Trainer will not divide TRL's loss itself
(`loss_is_scaled_for_ga`), so the regulariser's share of each optimiser step is its mean over
the micro-batches, as in `DispersionTrainer`. Weight 0 (or no regulariser) leaves
`compute_loss` exactly TRL's.

Tokens (`tokens=`): `completion` (default), the tokens TRL's loss scores: SFT's labels that are
not -100 (completion-only or assistant-only loss respected), DPO's `completion_mask` (chosen
and rejected), GRPO's `completion_mask` (after EOS and tool tokens masked); `all`: every
non-padding token, prompt included. Padding never enters a pair.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from lmdisp.errors import ConfigError, LmdispError

TOKEN_CHOICES = ("completion", "all")


@dataclass
class Regularizer:
    """What to add to TRL's loss: `weight` x the registered regulariser `name` (see
    `lmdisp.train.losses.LOSSES`) over the blocks `location` selects and the `tokens` chosen,
    at most `max_tokens` per sequence (a seeded subsample beyond)."""

    name: str = "dispersion"
    weight: float = 0.1
    tau: float = 1.0
    clamp: float = 0.1
    location: str = "all"
    max_tokens: int = 256
    tokens: str = "completion"
    seed: int = 1

    def __post_init__(self):
        from lmdisp.train.losses import LOCATIONS, get_loss

        get_loss(self.name)  # ConfigError naming the valid ones
        if self.location not in LOCATIONS:
            raise ConfigError(f"--location {self.location!r}: choose one of {', '.join(LOCATIONS)}")
        if self.tokens not in TOKEN_CHOICES:
            raise ConfigError(f"reg_tokens {self.tokens!r}: choose one of {', '.join(TOKEN_CHOICES)}")
        if not self.weight >= 0:
            raise ConfigError(f"--lambda must be >= 0 (got {self.weight})")

    def options(self) -> dict[str, float]:
        """tau and clamp, for the losses that take them (any registered loss works)."""
        import inspect

        from lmdisp.train.losses import get_loss

        accepted = inspect.signature(get_loss(self.name)).parameters
        return {k: v for k, v in {"tau": self.tau, "clamp": self.clamp}.items() if k in accepted}


class TokenLocationError(LmdispError):
    """The hidden states seen do not line up with the batch whose tokens were selected."""


def backbone(model):
    """The module under the LM head whose output carries `hidden_states` (through DDP,
    PEFT and the CausalLM wrapper)."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "base_model", model)


class Capture:
    """Hidden states of every forward through `module` with gradients on, while active."""

    def __init__(self):
        self.seen: list[tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor | None]] = []

    @contextlib.contextmanager
    def on(self, model):
        module = backbone(model)

        def pre(mod, args, kwargs):
            if torch.is_grad_enabled():
                kwargs["output_hidden_states"] = True
            return args, kwargs

        def post(mod, args, kwargs, output):
            if torch.is_grad_enabled() and getattr(output, "hidden_states", None) is not None:
                ids = kwargs.get("input_ids", args[0] if args else None)
                self.seen.append((output.hidden_states, ids, kwargs.get("attention_mask")))

        handles = [module.register_forward_pre_hook(pre, with_kwargs=True),
                   module.register_forward_hook(post, with_kwargs=True)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def stacked(self):
        """(hidden states per layer, input ids, attention mask), the forwards joined along the
        batch (GRPO runs one micro-batch in chunks)."""
        if not self.seen:
            raise TokenLocationError("the regulariser saw no forward pass with gradients in this step")
        layers = [torch.cat(t, dim=0) for t in zip(*(s[0] for s in self.seen))]
        ids = torch.cat([s[1] for s in self.seen], dim=0)
        masks = [s[2] if s[2] is not None else torch.ones_like(s[1]) for s in self.seen]
        return layers, ids, torch.cat(masks, dim=0)


def completion_tokens(inputs: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(input ids, mask of the tokens TRL's loss scores) for the batch of one `compute_loss`
    call: GRPO's prompt + completion, DPO's completion_mask, SFT's labels; None otherwise."""
    if "completion_ids" in inputs and "prompt_ids" in inputs:  # GRPO / RLOO
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        return ids, torch.cat([torch.zeros_like(inputs["prompt_mask"]), mask], dim=1)
    if "completion_mask" in inputs and "input_ids" in inputs:  # DPO
        return inputs["input_ids"], inputs["completion_mask"]
    if "labels" in inputs and "input_ids" in inputs:  # SFT (and plain causal LM batches)
        return inputs["input_ids"], (inputs["labels"] != -100).long()
    return None


def selected_mask(reg: Regularizer, inputs: dict, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """The [B, S] mask of the tokens entering pairs, aligned with the forward's `ids`."""
    if reg.tokens == "all":
        return attention
    found = completion_tokens(inputs)
    if found is None:
        raise TokenLocationError("reg_tokens=completion: this trainer's batch has no completion_mask or labels; "
                                 "use reg_tokens=all")
    want, mask = found
    if want.shape != ids.shape or not torch.equal(want.to(ids.device), ids):
        raise TokenLocationError(f"reg_tokens=completion: the forward pass saw tokens of shape {tuple(ids.shape)}, "
                                 f"the batch has {tuple(want.shape)} (padding-free or prompt-tuning?); use "
                                 "reg_tokens=all")
    return mask.to(attention.device) * attention


class RegularizerMixin:
    """Mix in before a TRL trainer: `class MySFT(RegularizerMixin, SFTTrainer)`; pass
    `regularizer=Regularizer(...)` (None or weight 0: the trainer is TRL's, exactly)."""

    def __init__(self, *args, regularizer: Regularizer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.regularizer = regularizer
        self._micro = (-1, 0)
        self._reg_sum, self._reg_steps = None, 0
        self._tokens_seen, self._last_log_time = 0, time.perf_counter()
        from lmdisp.train.telemetry import attach

        attach(self)

    def _regularizer_on(self, model) -> bool:
        return self.regularizer is not None and self.regularizer.weight > 0 and model.training

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self._tokens_seen += _real_tokens(inputs)
        if not self._regularizer_on(model):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        capture = Capture()
        with capture.on(model):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        value = self.regularizer_value(capture, inputs)
        scale = 1 / self._ga_steps() if self._loss_scaled_for_ga(num_items_in_batch) else 1
        loss = loss + scale * self.regularizer.weight * value
        self._reg_sum = value.detach() / self._ga_steps() + (0 if self._reg_sum is None else self._reg_sum)
        return (loss, *out[1:]) if return_outputs else loss

    def regularizer_value(self, capture: Capture, inputs: dict) -> torch.Tensor:
        """The regulariser over the captured hidden states and the selected tokens."""
        from lmdisp.train.losses import regularizer

        layers, ids, attention = capture.stacked()
        mask = selected_mask(self.regularizer, inputs, ids, attention)
        reg = self.regularizer
        return regularizer(layers, mask, reg.name.replace("-", "_"), location=reg.location,
                           max_tokens=reg.max_tokens, generator=self._generator(), **reg.options())

    def _ga_steps(self) -> int:
        return getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        """Trainer.training_step's own rule: when True it does not divide the loss by the
        accumulation steps, so a per-micro-batch mean must be divided here."""
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                    or self.compute_loss_func is not None)

    def _generator(self) -> torch.Generator:
        """Seeded by (seed, rank, step, micro-batch): a resumed run subsamples alike."""
        step = self.state.global_step
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        seed = hash((self.regularizer.seed, self.args.process_index, step, micro)) % (2**63)
        return torch.Generator().manual_seed(seed)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            steps = max(self.state.global_step - self._reg_steps, 1)
            if self._reg_sum is not None:
                value = self.accelerator.reduce(self._reg_sum.to(self.args.device), reduction="mean")
                logs["reg"] = round(float(value) / steps, 6)
                # the logged loss is TRL's objective + weight x reg, both averaged alike
                logs["objective"] = round(logs["loss"] - self.regularizer.weight * logs["reg"], 6)
                self._reg_sum = None
            else:
                logs["objective"] = logs["loss"]
            now = time.perf_counter()
            logs["tokens_per_s"] = round(self._tokens_seen / max(now - self._last_log_time, 1e-9), 1)
            self._tokens_seen, self._last_log_time, self._reg_steps = 0, now, self.state.global_step
        super().log(logs, start_time)


def _real_tokens(inputs: dict) -> int:
    """Non-padding tokens of a batch (SFT/DPO: attention_mask; GRPO: prompt + completion)."""
    if "attention_mask" in inputs:
        return int(inputs["attention_mask"].sum())
    if "prompt_mask" in inputs and "completion_mask" in inputs:
        return int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    return int(inputs["input_ids"].numel()) if "input_ids" in inputs else 0


def with_regularizer(trainer_class: type) -> type:
    """`trainer_class` (a TRL trainer, or any `transformers.Trainer`) with `RegularizerMixin`."""
    return type(f"Regularized{trainer_class.__name__}", (RegularizerMixin, trainer_class), {})
