"""The one trainer: `transformers.Trainer` plus a hidden-state regulariser, and its config.

`midtrain`, `pretrain` and `distill` all run through `DispersionTrainer` and `TrainConfig`;
they differ only in where the weights start (and, for `distill`, the extra teacher term).
Because it is a `Trainer`, the same command runs unchanged under `accelerate launch` /
`torchrun` for DDP, FSDP or DeepSpeed.

The regulariser follows `trl`'s pattern: `compute_loss` asks the model for its hidden
states, lets the parent compute (and normalise) the cross-entropy, then adds
`lambda * regulariser`. With the regulariser off, `compute_loss` *is* the parent's.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer

from lmdisp.config import require
from lmdisp.errors import LmdispError
from lmdisp.losses import LOCATIONS, LOSSES, regularizer
from lmdisp.models import DTYPES

# CLI loss names -> what they switch on. Regulariser names map to `lmdisp.losses`.
BASELINES = ("ce", "noisy-embedding", "active-forgetting")
REGULARIZERS = {name.replace("_", "-"): name for name in LOSSES}
LOSS_CHOICES = (*BASELINES, *REGULARIZERS)


def parse_tokens(value: int | float | str) -> int:
    """`200M`, `1.5B`, `50k`, `1e6` or a plain integer -> a token count."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(value))
    if not m:
        raise LmdispError(f"--train-tokens {value!r}: expected a number like 200M, 1.5B or 50000")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults: the paper's GPT-2 mid-training (section 3)."""

    model: str = "gpt2"               # paper: GPT2, GPT2-medium, Qwen3-0.6B, Qwen3-1.7B
    dataset: str = "wikitext"         # wikitext-103-raw-v1; also builtin, local files, any HF id
    text_field: str | None = None
    subset: str | None = None
    split: str = "train"
    tokenizer: str | None = None
    loss: str = "ce"                  # ce | dispersion | ... | noisy-embedding | active-forgetting
    lambda_disp: float = 0.1          # Table 4's best: lambda 0.1, tau 1.0
    tau: float = 1.0
    location: str = "all"             # all blocks; Table 3: late_half beats early_half
    clamp: float = 0.1                # straight-through arccos band [-1 + t, 1 - t] (authors: 0.1)
    max_tokens: int = 256             # tokens subsampled per sequence for the pairwise term
    train_tokens: Any = "200M"        # budget; steps = tokens / (context * global batch)
    context_length: int = 1024        # GPT2: 1024 (Qwen3: 4096)
    lr: float = 5e-5                  # scaled by sqrt(world size) when scale_lr
    scale_lr: bool = True
    batch_size: int = 32              # sequences per device per micro-step (paper GPT2: 32)
    grad_accum: int = 4               # paper GPT2: 4
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.2         # cosine schedule with 20% warm-up
    seed: int = 1
    precision: str = "auto"           # auto (bf16 where supported) | bf16 | fp16 | fp32
    gradient_checkpointing: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    noise_alpha: float = 1.0          # noisy-embedding (NEFTune) alpha
    forget_every: int = 1000          # active-forgetting: reset input embeddings every K steps
    forget_lr: float = 1e-4           # ... their own peak LR (short warm-up, linear decay)
    forget_warmup: int = 50
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    condensation_every: int = 100     # steps between condensation snapshots (0: off)
    condensation_sequences: int = 8   # held-out blocks measured at each snapshot
    eval_every: int = 0               # steps between benchmark evaluations (0: off)
    eval_tasks: str | None = None     # a comma list, a preset name (paper) or an eval YAML
    eval_include_path: str | None = None  # folder(s) of task YAMLs for eval_tasks (local data)
    eval_limit: float | None = None   # examples per task for the periodic evaluation
    report_to: str = "none"           # tensorboard, wandb, ... (the Trainer's report_to)
    dtype: str = "float32"            # master weights; bf16 compute comes from `precision`
    trust_remote_code: bool = False
    init: str = "pretrained"          # pretrained (midtrain) | scratch (pretrain)
    teacher: str | None = None        # distill: the teacher model spec
    distill_alpha: float = 0.5        # distill: weight of KD; CE gets 1 - alpha
    distill_temperature: float = 2.0  # distill: softmax temperature T (KD scaled by T^2)
    output: str | None = None
    results_dir: str = "results"
    resume: bool = False
    num_proc: int | None = None       # processes for tokenisation

    def __post_init__(self):
        require(self.loss in LOSS_CHOICES, f"--loss {self.loss!r}: choose one of {', '.join(LOSS_CHOICES)}")
        require(self.location in LOCATIONS, f"--location {self.location!r}: choose one of {', '.join(LOCATIONS)}")
        require(self.lambda_disp >= 0, f"--lambda must be >= 0 (got {self.lambda_disp})")
        require(self.tau > 0, f"--tau must be > 0 (got {self.tau})")
        require(0 < self.clamp < 1, f"--clamp must be in (0, 1) (got {self.clamp})")
        require(self.max_tokens >= 2, f"--max-tokens must be >= 2 (got {self.max_tokens})")
        self.train_tokens = parse_tokens(self.train_tokens)
        require(self.train_tokens > 0, f"--train-tokens must be > 0 (got {self.train_tokens})")
        require(self.context_length >= 2, f"--context-length must be >= 2 (got {self.context_length})")
        require(self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be >= 1")
        require(self.lr > 0, f"--lr must be > 0 (got {self.lr})")
        require(0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1) (got {self.warmup_ratio})")
        require(self.precision in ("auto", "bf16", "fp16", "fp32"), "--precision: auto, bf16, fp16 or fp32")
        require(self.dtype in DTYPES, f"--dtype: choose one of {', '.join(DTYPES)}")
        require(self.init in ("pretrained", "scratch"), "--init: pretrained or scratch")
        require(self.forget_every >= 1, "--forget-every must be >= 1")
        require(0 <= self.distill_alpha <= 1, f"distill_alpha must be in [0, 1] (got {self.distill_alpha})")
        require(self.distill_temperature > 0, f"distill_temperature must be > 0 (got {self.distill_temperature})")
        require(self.noise_alpha >= 0, "--noise-alpha must be >= 0")
        require(not self.resume or self.output, "--resume needs --output: the run folder to continue")
        if self.output:
            parent = Path(self.output).expanduser().resolve().parent
            require(parent.is_dir(), f"--output: parent folder does not exist: {parent}")
        for name in ("logging_steps", "save_steps"):
            require(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")

    @property
    def regularizer(self) -> str | None:
        """The `lmdisp.losses` name of the active regulariser (None for the baselines)."""
        return REGULARIZERS.get(self.loss)

    def world_tokens_per_step(self, world_size: int) -> int:
        return self.context_length * self.batch_size * self.grad_accum * world_size

    def max_steps(self, world_size: int) -> int:
        per_step = self.world_tokens_per_step(world_size)
        require(self.train_tokens >= per_step,
                f"--train-tokens {self.train_tokens} is less than one optimiser step "
                f"({per_step} tokens = context {self.context_length} x batch {self.batch_size} x "
                f"accumulation {self.grad_accum} x {world_size} process(es))")
        return self.train_tokens // per_step

    def scaled_lr(self, world_size: int) -> float:
        """The paper's rule: the learning rate grows with the square root of the world size."""
        return self.lr * math.sqrt(world_size) if self.scale_lr else self.lr


class NonFiniteLoss(LmdispError):
    """The loss became NaN or infinite; the run stops keeping its last good checkpoint."""


class DispersionTrainer(Trainer):
    """`Trainer` whose loss is cross-entropy + lambda * regulariser(hidden states)."""

    def __init__(self, *args, run_config: TrainConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self._sums = torch.zeros(len(self.TERMS) + 2)  # ce, terms, tokens since the last log
        self._micro = (-1, 0)         # (global step, micro-batch index) for the subsample seed

    # -- the loss ---------------------------------------------------------------------

    TERMS = ("reg",)  # auxiliary terms this trainer logs next to ce (subclasses add theirs)
    ce_weight = 1.0

    def has_auxiliary(self) -> bool:
        return self.run_config.regularizer is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.has_auxiliary() or not model.training:
            loss_out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self._track(loss_out[0] if return_outputs else loss_out, {}, inputs, num_items_in_batch)
            return loss_out
        if self.run_config.regularizer:
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
        if cfg.regularizer is None:
            return {}
        reg = regularizer(outputs.hidden_states, inputs.get("attention_mask"), cfg.regularizer,
                          location=cfg.location, max_tokens=cfg.max_tokens, generator=self._generator(),
                          **self._loss_options())
        return {"reg": (cfg.lambda_disp, reg)}

    @property
    def _ga_steps(self) -> int:
        """Micro-batches in the current optimiser step (set by `Trainer.train`)."""
        return getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)

    def _loss_options(self) -> dict[str, float]:
        cfg = self.run_config
        opts = {"dispersion": {"tau": cfg.tau, "clamp": cfg.clamp}, "l2_repel": {"tau": cfg.tau},
                "orthogonalization": {"clamp": cfg.clamp}, "infonce_cos": {"tau": cfg.tau}}
        return opts.get(cfg.regularizer, {})

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

    # -- logging: CE and regulariser separately --------------------------------------------

    def _track(self, ce, terms, inputs, num_items_in_batch=None) -> None:
        ga = self._ga_steps
        ce_part = ce.detach().float() / (1 if self._loss_scaled_for_ga(num_items_in_batch) else ga)
        values = {name: value.detach().float() for name, (_, value) in terms.items()}
        if not torch.isfinite(ce_part) or not all(torch.isfinite(v) for v in values.values()):
            shown = ", ".join(f"{k}={v.item():.4g}" for k, v in {"ce": ce.detach(), **values}.items())
            raise NonFiniteLoss(f"non-finite loss at step {self.state.global_step + 1} ({shown}); stopped, "
                                f"the last good checkpoint is kept in {self.args.output_dir}")
        parts = [ce_part.cpu()] + [values[n].cpu() / ga if n in values else torch.zeros(()) for n in self.TERMS]
        parts.append(torch.tensor(float(inputs["input_ids"].numel())))
        if self._sums.numel() != len(parts):
            self._sums = torch.zeros(len(parts))
        self._sums += torch.stack(parts)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            import time

            sums = self._sums.to(self.args.device)
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
                sums[:-1] /= self.args.world_size  # means over processes; tokens stay a sum
            steps = max(self.state.global_step - getattr(self, "_last_logged_step", 0), 1)
            now = time.perf_counter()
            elapsed = now - getattr(self, "_last_log_time", self._train_start)
            for i, name in enumerate(("ce", *self.TERMS)):
                logs[name] = round(float(sums[i]) / steps, 6) if i < len(sums) - 1 else 0.0
            logs["tokens_per_s"] = round(float(sums[-1]) / max(elapsed, 1e-9), 1)
            self._sums.zero_()
            self._last_logged_step, self._last_log_time = self.state.global_step, now
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        import time

        self._train_start = time.perf_counter()
        return super().train(*args, **kwargs)

    # -- active forgetting: the input embeddings get their own group and schedule ------------

    def create_optimizer(self, model=None):
        if self.run_config.loss != "active-forgetting":
            return super().create_optimizer(model)
        from lmdisp.callbacks import split_embedding_params

        cfg = self.run_config
        body, emb = split_embedding_params(self.model)
        decay = set(self.get_decay_parameter_names(self.model))
        named = dict(self.model.named_parameters())
        groups = [
            {"params": [p for n, p in named.items() if n in body and n in decay], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named.items() if n in body and n not in decay], "weight_decay": 0.0},
            {"params": [named[n] for n in emb], "weight_decay": 0.0, "lr": cfg.forget_lr, "lmdisp_embeddings": True},
        ]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.args.learning_rate,
                                           betas=(self.args.adam_beta1, self.args.adam_beta2),
                                           eps=self.args.adam_epsilon)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.run_config.loss != "active-forgetting":
            return super().create_scheduler(num_training_steps, optimizer)
        from lmdisp.callbacks import cosine_with_warmup, forgetting_cycle

        cfg = self.run_config
        optimizer = optimizer or self.optimizer
        body = cosine_with_warmup(self.args.get_warmup_steps(num_training_steps), num_training_steps)
        emb = forgetting_cycle(cfg.forget_warmup, cfg.forget_every)
        lambdas = [emb if g.get("lmdisp_embeddings") else body for g in optimizer.param_groups]
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler
