"""`TrainConfig`: every setting of a training run (`midtrain`, `pretrain`, `distill`).

Defaults are the paper's GPT-2 mid-training (section 3 of the paper; the authors'
`midtrain_gpt2.py`). Each field is declared once, with its help: the YAML key, the `--set`
key and (for the common ones) the flag. `trainer_args` passes any other
`transformers.TrainingArguments` field through (optim, lr_scheduler_type, torch_compile,
dataloader_num_workers, ...); it is saved in config.yaml like every other field.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types as at

from lmdisp.config import (MODEL_PANEL, OUTPUT_PANEL, Dtype, Fraction, NonNegative, NonNegativeInt, Normalize,
                           OpenUnit, Positive, PositiveInt, Probability, option, require, shown)
from lmdisp.errors import ConfigError
from lmdisp.train.data_config import DataConfig, parse_tokens, train_blocks  # noqa: F401 - re-exported
from lmdisp.runs import check_output_option


def canonical_loss(name: Any) -> Any:
    """`l2_repel` and `l2-repel` are one loss: the CLI's dashed spelling is the only one kept
    (config, manifest, report labels and the `lmdisp.train.losses` registry all use it)."""
    return name.replace("_", "-") if isinstance(name, str) else name


# The loss names, as the CLI spells them. The regularisers are the `lmdisp.train.losses`
# registry (a test checks the two agree); the baselines switch on other machinery.
BASELINES = ("ce", "noisy-embedding", "active-forgetting")
REGULARIZERS = ("dispersion", "dispersion-torchtitan", "decorrelation", "l2-repel", "l2-repel-paper",
                "orthogonalization", "infonce-cos")
LossName = Annotated[Literal["ce", "dispersion", "dispersion-torchtitan", "decorrelation", "l2-repel",
                             "l2-repel-paper", "orthogonalization", "infonce-cos", "noisy-embedding",
                             "active-forgetting"], Normalize(canonical_loss)]
Location = Literal["all", "early_half", "late_half", "last"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
ForgetSchedule = Literal["authors", "cycle"]
PRECISIONS = typing.get_args(Precision)
# The options each loss reads; one set away from its default under another loss is refused
# (it would do nothing). The regularisers' tau and clamp are passed to the loss function.
_REG = ("lambda_disp", "location", "max_tokens")
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "ce": (), "dispersion": (*_REG, "tau", "clamp"), "dispersion-torchtitan": (*_REG, "tau", "clamp"),
    "decorrelation": _REG, "l2-repel": (*_REG, "tau"), "l2-repel-paper": (*_REG, "tau"),
    "orthogonalization": (*_REG, "clamp"), "infonce-cos": (*_REG, "tau"), "noisy-embedding": ("noise_alpha",),
    "active-forgetting": ("forget_every", "forget_lr", "forget_warmup", "forget_schedule"),
}
TAU_MIN = 1e-6

_MODEL, _LOSS, _OPT, _LOG, _RUN = MODEL_PANEL, "Loss", "Optimiser", "Logging and evaluation", OUTPUT_PANEL
_DISTILL = ("distill",)


def check_report_to(value: str) -> str:
    """`none`, `all`, or a comma list of the Trainer's integrations, each installed."""
    import importlib.util

    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [v.strip() for v in str(value).split(",") if v.strip()] or ["none"]
    if names in (["none"], ["all"]):
        return names[0]
    valid = sorted(INTEGRATION_TO_CALLBACK)
    bad = [n for n in names if n not in valid]
    require(not bad, f"--report-to {', '.join(bad)}: choose none, all or any of {', '.join(valid)}")
    packages = {"tensorboard": ("tensorboard", "tensorboardX"), "azure_ml": ("azureml",), "flyte": ("flytekit",),
                "kubeflow": ("kubeflow",)}
    missing = [n for n in names if not any(importlib.util.find_spec(p) for p in packages.get(n, (n,)))]
    require(not missing, f"--report-to {', '.join(missing)}: the package is not installed (pip install "
            f"{' '.join(packages.get(m, (m,))[0] for m in missing)}), or use --report-to none")
    return ",".join(names)


@dataclass
class TrainConfig(DataConfig):
    """Every setting of a training run (its data settings: `DataConfig`). Defaults: the paper's
    GPT-2 mid-training."""

    # -- model and data (the rest: DataConfig)
    teacher: str | None = option(None, "The teacher model (same tokenizer as the student).", panel=_MODEL,
                                 commands=_DISTILL)
    # -- the loss
    loss: LossName = option("ce", "The training loss: ce, or ce + lambda * a regulariser (dispersion-torchtitan: "
                            "Table 5's TorchTitan copy, plain clamp, epsilons 1e-4; l2-repel: the authors' code, "
                            "i = j included; l2-repel-paper: the paper's i != j), or a baseline (noisy-embedding: "
                            "NEFTune; active-forgetting).", panel=_LOSS)
    lambda_disp: NonNegative = option(0.1, "Regulariser weight (Table 4's best: 0.1).", panel=_LOSS, flag="--lambda")
    tau: Annotated[float, at.Ge(TAU_MIN)] = option(1.0, "Temperature of the regulariser (Table 4's best: 1.0).", panel=_LOSS)
    location: Location = option("all", "Blocks regularised.", panel=_LOSS)
    clamp: OpenUnit = option(0.1, "Straight-through arccos band [-1 + t, 1 - t] (authors: 0.1 for GPT-2, "
                          "0.25 for Qwen3).", cli="set")
    max_tokens: Annotated[int, at.Ge(2)] = option(256, "Tokens subsampled per sequence for the pairwise term "
                                                  "(authors: 256).", cli="set")
    distill_alpha: Probability = option(0.5, "Weight of the KD term; CE gets 1 - alpha.", cli="set", commands=_DISTILL)
    distill_temperature: Positive = option(2.0, "Softmax temperature T (KD scaled by T^2).", cli="set",
                                        commands=_DISTILL)
    # -- budget and optimiser
    lr: Positive = option(5e-5, "Peak learning rate (with global_batch 0 and scale_lr: before sqrt(world size) "
                       "scaling).", panel=_OPT)
    scale_lr: bool = option(True, "With global_batch 0: scale the LR by sqrt(world size), the authors' code's rule "
                            "for a batch that grows with the GPU count.", cli="set")
    batch_size: PositiveInt = option(32, "Sequences per device per micro-step (paper GPT-2: 32); with global_batch, the "
                             "largest micro-batch used.", panel=_OPT)
    grad_accum: PositiveInt = option(4, "Gradient accumulation steps (paper GPT-2: 4); with global_batch, those of one "
                             "process.", panel=_OPT)
    weight_decay: NonNegative = option(0.1, "AdamW weight decay (biases and norms excluded).", cli="set")
    adam_beta1: Fraction = option(0.9, "AdamW beta1.", cli="set")
    adam_beta2: Fraction = option(0.95, "AdamW beta2.", cli="set")
    max_grad_norm: Positive = option(1.0, "Gradient clipping norm.", cli="set")
    warmup_ratio: Fraction = option(0.2, "Share of steps in linear warm-up before the cosine decay.", cli="set")
    warmup_steps: NonNegativeInt = option(0, "Warm-up steps; > 0 replaces warmup_ratio (Table 5: 500).", cli="set")
    min_lr_ratio: Fraction = option(0.0, "Floor of the cosine decay as a fraction of the peak LR (Table 5: 0.1; "
                                 "> 0 uses transformers' cosine_with_min_lr).", cli="set")
    seed: int = option(1, "Seed for init, data order, noise and subsampling.", panel=_OPT)
    precision: Precision = option("auto", "Mixed precision (auto: bf16 where supported, else fp32).", panel=_OPT)
    dtype: Dtype = option("float32", "Master-weight dtype (auto: the checkpoint's own); bf16 compute comes from "
                          "precision.", cli="set")
    gradient_checkpointing: bool = option(True, "Recompute activations in the backward pass.", panel=_OPT)
    lora: bool = option(False, "Train LoRA adapters only (peft); a merged model is saved as final/.", panel=_OPT)
    lora_r: PositiveInt = option(16, "LoRA rank.", cli="set")
    lora_alpha: PositiveInt = option(32, "LoRA alpha.", cli="set")
    trainer_args: dict[str, Any] = option(None, "Any other transformers.TrainingArguments field, e.g. "
                                          "{optim: adamw_torch_fused, torch_compile: true}.", cli="set", factory=dict)
    # -- baselines
    noise_alpha: NonNegative = option(1.0, "noisy-embedding (NEFTune) alpha (authors: 1 for GPT-2, 5 for Qwen3).",
                                cli="set")
    forget_every: PositiveInt = option(1000, "active-forgetting: reset the input embeddings every K steps.", cli="set")
    forget_lr: Positive = option(5e-5, "active-forgetting: the embeddings' own peak LR (authors: 5e-5).", cli="set")
    forget_warmup: NonNegative = option(0.08, "active-forgetting: the embeddings' warm-up; < 1: a fraction of the "
                                  "total steps (authors: 0.08), >= 1: steps.", cli="set")
    forget_schedule: ForgetSchedule = option("authors", "active-forgetting embedding LR: authors (one warm-up/linear-decay "
                                  "curve indexed by (g*floor(T/K)) mod T) | cycle (warm-up and decay restarted "
                                  "at every reset).", cli="set")
    # -- logging and evaluation
    logging_steps: PositiveInt = option(10, "Steps between log records.", panel=_LOG)
    save_steps: PositiveInt = option(500, "Steps between checkpoints.", panel=_LOG)
    save_total_limit: NonNegativeInt = option(2, "Checkpoints kept.", cli="set")
    eval_points: NonNegativeInt = option(0, "The authors' periodic evaluation schedule: save (and keep) a checkpoint every "
                              "floor(T/K)+1 steps and at the end, K = this (authors: 5), for `evaluate RUN "
                              "--checkpoints all` and `report --select best`; evaluates there too with "
                              "eval_tasks. 0: off (save_steps, save_total_limit apply).", cli="set")
    condensation_every: NonNegativeInt = option(100, "Steps between condensation snapshots (0: off).", panel=_LOG)
    eval_every: NonNegativeInt = option(0, "Steps between benchmark evaluations (0: off).", cli="set")
    eval_tasks: str | None = option(None, "Tasks of the periodic evaluation: a comma list, a preset (paper) "
                                    "or an eval YAML.", cli="set")
    eval_include_path: str | None = option(None, "Folder(s) of task YAMLs for eval_tasks (local data).", cli="set")
    eval_limit: Optional[Positive] = option(None, "Examples per task for the periodic evaluation.", cli="set")
    report_to: str = option("none", "none | all | a comma list of the Trainer's integrations (tensorboard, wandb, "
                            "mlflow, ...), each installed.", panel=_LOG)
    # -- the run folder
    init: Literal["pretrained", "scratch"] = option("pretrained", "pretrained (midtrain, distill) or scratch (pretrain).", cli="fixed")
    output: str | None = option(None, "Run folder: new, or the one to --resume.", short="-o", panel=_RUN)
    results_dir: str = option("results", "Where timestamped run folders go.", panel=_RUN)
    resume: bool = option(False, "Continue the run in --output from its newest complete checkpoint.", panel=_RUN)
    resume_from: str | None = option(None, "Continue the run in --output from this checkpoint instead "
                                     "(checkpoint-N, or a path to one); implies --resume.", cli="set")

    def __post_init__(self):
        super().__post_init__()  # every field's type, choices and range; below: cross-field rules
        self._check_global_batch()
        check_output_option(self.output)
        self.resume = self.resume or bool(self.resume_from)
        require(not self.resume or self.output, "--resume needs --output: the run folder to continue")
        self._check_loss_options()
        self._check_tau()
        self.report_to = check_report_to(self.report_to)

    def _check_loss_options(self) -> None:
        """An option of another loss set away from its default would do nothing: refused."""
        defaults = TrainConfig.__dataclass_fields__
        unused = list(dict.fromkeys(n for options in LOSS_OPTIONS.values() for n in options
                                    if n not in LOSS_OPTIONS[self.loss] and getattr(self, n) != defaults[n].default))
        if unused:
            uses = sorted(loss for loss, options in LOSS_OPTIONS.items() if unused[0] in options)
            given = ", ".join(shown(TrainConfig, n, getattr(self, n)) for n in unused)
            raise ConfigError(f"{given}: {'does' if len(unused) == 1 else 'do'} nothing with --loss {self.loss} "
                              f"(used by --loss {' | '.join(uses)}); drop {'it' if len(unused) == 1 else 'them'} "
                              f"or choose such a loss")
        for name in ("distill_alpha", "distill_temperature"):
            require(self.teacher or getattr(self, name) == defaults[name].default,
                    f"{shown(TrainConfig, name, getattr(self, name))}: does nothing without a teacher "
                    f"(lmdisp distill --teacher MODEL)")

    def _check_global_batch(self) -> None:
        """With a fixed global batch, batch_size x grad_accum is its split on one process (fidelity T1)."""
        g = self.global_batch
        if g and self.batch_size * self.grad_accum != g:
            fix = (f"pass --grad-accum {g // self.batch_size}" if g % self.batch_size == 0 else
                   f"pass a --batch-size dividing {g} and --grad-accum {g} / that")
            raise ConfigError(f"--batch-size {self.batch_size} x --grad-accum {self.grad_accum} = "
                              f"{self.batch_size * self.grad_accum} sequences per step, but global_batch is {g}: "
                              f"{fix}, or --set global_batch=0 for per-process batches")

    def _check_tau(self) -> None:
        """The regularisers are log-sum-exps of -distance / tau: finite in float32 for any tau
        >= TAU_MIN (checked down to 1e-12), but their value and gradient scale as 1 / tau, so
        lambda * reg swamps the cross-entropy far from the paper's range (0.1 .. 10)."""
        if self.loss in ("dispersion", "l2-repel", "infonce-cos") and not 0.01 <= self.tau <= 100:
            import logging

            logging.getLogger("lmdisp").warning(
                "--tau %g is far from the paper's range (0.1 .. 10): the regulariser scales as 1 / tau, so "
                "lambda * reg %s the cross-entropy", self.tau, "dominates" if self.tau < 0.01 else "barely moves")

    @property
    def has_regularizer(self) -> bool:
        """Whether the loss adds a `lmdisp.train.losses` regulariser (its registry name is `loss`)."""
        return self.loss in REGULARIZERS

    def batch_plan(self, world_size: int) -> tuple[int, int]:
        """(sequences per device per micro-step, accumulation steps) on `world_size` processes.
        With global_batch G: G / world sequences per process per step, in the largest micro-batch
        <= batch_size that divides it (fidelity T1); refused when the world does not divide G."""
        g = self.global_batch
        if not g:
            return self.batch_size, self.grad_accum
        per_rank, rest = divmod(g, world_size)
        if rest:
            options = ", ".join(str(n) for n in range(1, g + 1) if g % n == 0)
            raise ConfigError(f"global_batch {g} sequences cannot be split evenly over {world_size} processes: "
                              f"run on {options} processes, or --set global_batch=0 for per-process batches "
                              "(tokens per step then grow with the process count)")
        micro = max(d for d in range(1, min(self.batch_size, per_rank) + 1) if per_rank % d == 0)
        return micro, per_rank // micro

    def world_tokens_per_step(self, world_size: int) -> int:
        micro, accum = self.batch_plan(world_size)
        return self.context_length * micro * accum * world_size

    def max_steps(self, world_size: int) -> int:
        """ceil(train_tokens / tokens per step), as the authors count T (`midtrain_gpt2.py`; fidelity T3)."""
        per_step = self.world_tokens_per_step(world_size)
        micro, accum = self.batch_plan(world_size)
        require(self.train_tokens >= per_step,
                f"--train-tokens {self.train_tokens} is less than one optimiser step "
                f"({per_step} tokens = context {self.context_length} x batch {micro} x "
                f"accumulation {accum} x {world_size} process(es))")
        return -(-self.train_tokens // per_step)

    def eval_interval(self, max_steps: int) -> int:
        """The authors' periodic evaluation interval floor(T/K) + 1 (0 when eval_points is off)."""
        return max_steps // self.eval_points + 1 if self.eval_points else 0

    def scaled_lr(self, world_size: int) -> float:
        """The LR on `world_size` processes: fixed with a global batch (fidelity T1), else the
        authors' code's rule when scale_lr is on: x sqrt(world size)."""
        return self.lr * math.sqrt(world_size) if self.scale_lr and not self.global_batch else self.lr

    def batch_record(self, world: int) -> dict:
        """What the manifest records about the optimisation on `world` processes (fidelity T1)."""
        micro, accum = self.batch_plan(world)
        return {"world_size": world, "global_batch": micro * accum * world, "per_device_batch": micro,
                "grad_accum": accum, "tokens_per_step": self.world_tokens_per_step(world),
                "max_steps": self.max_steps(world), "learning_rate": self.scaled_lr(world),
                "learning_rate_rule": self.lr_rule(world)}

    def lr_rule(self, world_size: int) -> str:
        """How `scaled_lr` was obtained, for the manifest."""
        if self.global_batch:
            return f"lr {self.lr}, fixed: global batch {self.global_batch} sequences on any world size"
        if self.scale_lr:
            return f"lr {self.lr} x sqrt(world size {world_size})"
        return f"lr {self.lr}, not scaled (scale_lr off)"

    def method_label(self) -> str:
        """The report label: the loss plus the settings that differ from the defaults,
        e.g. `dispersion (tau=0.5)`."""
        shown = {"noisy-embedding": ("noise_alpha",),
                 "active-forgetting": ("forget_every", "forget_lr", "forget_schedule")}
        names = shown.get(self.loss, () if self.loss in BASELINES else ("lambda_disp", "tau", "location"))
        defaults = TrainConfig.__dataclass_fields__
        parts = [f"{n.replace('lambda_disp', 'lambda')}={getattr(self, n)}" for n in names
                 if getattr(self, n) != defaults[n].default]
        parts += ["lora"] if self.lora else []
        parts += [f"KD from {self.teacher}"] if self.teacher else []  # a distill run
        return self.loss + (f" ({', '.join(parts)})" if parts else "")

    def base_label(self) -> str:
        return self.model + (" (scratch)" if self.init == "scratch" else "")
