"""`TrainConfig`: every setting of a training run (`midtrain`, `pretrain`, `distill`).

Defaults are the paper's GPT-2 mid-training (section 3 of the paper; the authors'
`midtrain_gpt2.py`). Each field is declared once, with its help: the YAML key, the `--set`
key and (for the common ones) the flag. `trainer_args` passes any other
`transformers.TrainingArguments` field through (optim, lr_scheduler_type, torch_compile,
dataloader_num_workers, ...); it is saved in config.yaml like every other field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdisp.config import option, option_name, require
from lmdisp.errors import ConfigError
from lmdisp.runs import check_output_option
from lmdisp.models import DTYPES

# CLI loss names -> what they switch on. Regulariser names map to `lmdisp.train.losses`
# (imported only when a config is built: torch stays unloaded for `lmdisp --help`).
BASELINES = ("ce", "noisy-embedding", "active-forgetting")


def regularizers() -> dict[str, str]:
    """CLI name -> `lmdisp.train.losses` registry name of every regulariser."""
    from lmdisp.train.losses import LOSSES

    return {name.replace("_", "-"): name for name in LOSSES}


def loss_choices() -> tuple[str, ...]:
    return (*BASELINES, *regularizers())
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
FORGET_SCHEDULES = ("authors", "cycle")
# How records become blocks (`lmdisp.train.shards`): one continuous token stream (transformers'
# run_clm), or the authors' HF scripts' packing per batch of 1000 records, each batch's tail
# dropped (docs/fidelity.md D2). Separators: none, or each record wrapped in the tokenizer's
# BOS (where it has one) and EOS, as TorchTitan's loader does (docs/fidelity.md P5).
PACKINGS = ("continuous", "per-1000")
DOC_TOKENS = ("none", "bos-eos")

_DATA, _LOSS, _OPT, _BASE, _LOG, _RUN = ("Model and data", "Loss", "Budget and optimiser", "Baselines",
                                         "Logging and evaluation", "Run folder")
_DISTILL = ("distill",)


def parse_tokens(value: int | float | str) -> int:
    """`200M`, `1.5B`, `50k`, `1e6` or a plain integer -> a token count."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(value))
    if not m:
        raise ConfigError(f"--train-tokens {value!r}: expected a number like 200M, 1.5B or 50000")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


TAU_MIN = 1e-6


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


def canonical_loss(name: str) -> str:
    """`l2_repel` and `l2-repel` are one loss: the CLI spelling is the canonical one."""
    return str(name).replace("_", "-")


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults: the paper's GPT-2 mid-training."""

    # -- model and data
    model: str = option("gpt2", "Hub id, folder, .gguf, alias or random:<config> (pretrain: a config name).",
                        short="-m", panel=_DATA)
    dataset: str = option("wikitext", "wikitext (wikitext-103-raw-v1), fineweb-edu, measure's corpora (wikipedia, "
                          "pubmed, imdb, squad), builtin (offline), a local file/folder or an HF id.", panel=_DATA)
    text_field: str | None = option(None, "Text column of a hub/local dataset.", panel=_DATA)
    subset: str | None = option(None, "Hub dataset config name.", cli="set")
    split: str = option("train", "Dataset split.", cli="set")
    packing: str = option("continuous", "How records become blocks: continuous (one token stream; a record may "
                          "straddle two blocks) | per-1000 (the authors' HF scripts: packed per batch of 1000 "
                          "records, each batch's tail dropped).", cli="set")
    doc_tokens: str = option("none", "Tokens around each record: none | bos-eos (the tokenizer's BOS, where it has "
                             "one, and EOS, as the authors' TorchTitan loader).", cli="set")
    tokenizer: str | None = option(None, "Tokenizer to use instead of the model's own.", cli="set")
    teacher: str | None = option(None, "The teacher model (same tokenizer as the student).", panel=_DATA,
                                 commands=_DISTILL)
    # -- the loss
    loss: str = option("ce", "ce | dispersion | dispersion-torchtitan (Table 5's TorchTitan copy: plain "
                       "clamp, epsilons 1e-4) | decorrelation | l2-repel (the authors' code: i = j included) | l2-repel-paper (the paper's i != j) | orthogonalization | infonce-cos | "
                       "noisy-embedding | active-forgetting.", panel=_LOSS)
    lambda_disp: float = option(0.1, "Regulariser weight (Table 4's best: 0.1).", panel=_LOSS)
    tau: float = option(1.0, "Temperature of the regulariser (Table 4's best: 1.0).", panel=_LOSS)
    location: str = option("all", "Blocks regularised: all | early_half | late_half | last.", panel=_LOSS)
    clamp: float = option(0.1, "Straight-through arccos band [-1 + t, 1 - t] (authors: 0.1 for GPT-2, "
                          "0.25 for Qwen3).", cli="set")
    max_tokens: int = option(256, "Tokens subsampled per sequence for the pairwise term (authors: 256).", cli="set")
    distill_alpha: float = option(0.5, "Weight of the KD term; CE gets 1 - alpha.", cli="set", commands=_DISTILL)
    distill_temperature: float = option(2.0, "Softmax temperature T (KD scaled by T^2).", cli="set",
                                        commands=_DISTILL)
    # -- budget and optimiser
    train_tokens: int | str = option("200M", "Token budget: 200M, 1.5B, 50k; steps = tokens / (context x global "
                                     "batch).", panel=_OPT)
    context_length: int = option(1024, "Tokens per packed block (GPT-2: 1024, Qwen3: 4096).", panel=_OPT)
    lr: float = option(5e-5, "Peak learning rate (with global_batch 0 and scale_lr: before sqrt(world size) "
                       "scaling).", panel=_OPT)
    scale_lr: bool = option(True, "With global_batch 0: scale the LR by sqrt(world size), the authors' code's rule "
                            "for a batch that grows with the GPU count.", cli="set")
    global_batch: int = option(0, "Sequences per optimiser step over all processes (paper presets: GPT-2 128, "
                               "Qwen3 32). > 0: the same steps, LR and tokens per step on any number of GPUs "
                               "(batch_size x grad_accum is its split on one process; on N the micro-batch and "
                               "accumulation adapt). 0: batch_size x grad_accum per process.", cli="set")
    batch_size: int = option(32, "Sequences per device per micro-step (paper GPT-2: 32); with global_batch, the "
                             "largest micro-batch used.", panel=_OPT)
    grad_accum: int = option(4, "Gradient accumulation steps (paper GPT-2: 4); with global_batch, those of one "
                             "process.", panel=_OPT)
    weight_decay: float = option(0.1, "AdamW weight decay (biases and norms excluded).", cli="set")
    adam_beta1: float = option(0.9, "AdamW beta1.", cli="set")
    adam_beta2: float = option(0.95, "AdamW beta2.", cli="set")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", cli="set")
    warmup_ratio: float = option(0.2, "Share of steps in linear warm-up before the cosine decay.", cli="set")
    warmup_steps: int = option(0, "Warm-up steps; > 0 replaces warmup_ratio (Table 5: 500).", cli="set")
    min_lr_ratio: float = option(0.0, "Floor of the cosine decay as a fraction of the peak LR (Table 5: 0.1; "
                                 "> 0 uses transformers' cosine_with_min_lr).", cli="set")
    seed: int = option(1, "Seed for init, data order, noise and subsampling.", panel=_OPT)
    precision: str = option("auto", "auto (bf16 where supported) | bf16 | fp16 | fp32.", panel=_OPT)
    dtype: str = option("float32", "Master-weight dtype; bf16 compute comes from precision.", cli="set")
    gradient_checkpointing: bool = option(True, "Recompute activations in the backward pass.", panel=_OPT)
    lora: bool = option(False, "Train LoRA adapters only (peft); a merged model is saved as final/.", panel=_OPT)
    lora_r: int = option(16, "LoRA rank.", cli="set")
    lora_alpha: int = option(32, "LoRA alpha.", cli="set")
    trainer_args: dict[str, Any] = option(None, "Any other transformers.TrainingArguments field, e.g. "
                                          "{optim: adamw_torch_fused, torch_compile: true}.", cli="set", factory=dict)
    # -- baselines
    noise_alpha: float = option(1.0, "noisy-embedding (NEFTune) alpha (authors: 1 for GPT-2, 5 for Qwen3).",
                                cli="set")
    forget_every: int = option(1000, "active-forgetting: reset the input embeddings every K steps.", cli="set")
    forget_lr: float = option(5e-5, "active-forgetting: the embeddings' own peak LR (authors: 5e-5).", cli="set")
    forget_warmup: float = option(0.08, "active-forgetting: the embeddings' warm-up; < 1: a fraction of the "
                                  "total steps (authors: 0.08), >= 1: steps.", cli="set")
    forget_schedule: str = option("authors", "active-forgetting embedding LR: authors (one warm-up/linear-decay "
                                  "curve indexed by (g*floor(T/K)) mod T) | cycle (warm-up and decay restarted "
                                  "at every reset).", cli="set")
    # -- logging and evaluation
    logging_steps: int = option(10, "Steps between log records.", panel=_LOG)
    save_steps: int = option(500, "Steps between checkpoints.", panel=_LOG)
    save_total_limit: int = option(2, "Checkpoints kept.", cli="set")
    eval_points: int = option(0, "The authors' periodic evaluation schedule: save (and keep) a checkpoint every "
                              "floor(T/K)+1 steps and at the end, K = this (authors: 5), for `evaluate RUN "
                              "--checkpoints all` and `report --select best`; evaluates there too with "
                              "eval_tasks. 0: off (save_steps, save_total_limit apply).", cli="set")
    condensation_every: int = option(100, "Steps between condensation snapshots (0: off).", panel=_LOG)
    condensation_sequences: int = option(8, "Held-out blocks measured at each snapshot.", cli="set")
    eval_every: int = option(0, "Steps between benchmark evaluations (0: off).", cli="set")
    eval_tasks: str | None = option(None, "Tasks of the periodic evaluation: a comma list, a preset (paper) "
                                    "or an eval YAML.", cli="set")
    eval_include_path: str | None = option(None, "Folder(s) of task YAMLs for eval_tasks (local data).", cli="set")
    eval_limit: float | None = option(None, "Examples per task for the periodic evaluation.", cli="set")
    report_to: str = option("none", "none | all | a comma list of the Trainer's integrations (tensorboard, wandb, "
                            "mlflow, ...), each installed.", panel=_LOG)
    # -- the run folder
    trust_remote_code: bool = option(False, "Allow model repos to run their own Python code (only for repos "
                                     "you trust).", panel=_RUN)
    init: str = option("pretrained", "pretrained (midtrain, distill) or scratch (pretrain).", cli="fixed")
    output: str | None = option(None, "Run folder: new, or the one to --resume.", short="-o", panel=_RUN)
    results_dir: str = option("results", "Where timestamped run folders go.", cli="set")
    resume: bool = option(False, "Continue the run in --output from its newest complete checkpoint.", panel=_RUN)
    resume_from: str | None = option(None, "Continue the run in --output from this checkpoint instead "
                                     "(checkpoint-N, or a path to one); implies --resume.", cli="set")
    num_proc: int | None = option(None, "Tokenizer processes while building token shards (default: the fast "
                                  "tokenizer's own threads).", cli="set")
    cache_dir: str | None = option(None, "Token-shard cache (default: $LMDISP_CACHE/tokens, "
                                   "~/.cache/lmdisp/tokens).", cli="set")

    def __post_init__(self):
        for field, value in vars(self).items():  # nan and inf pass every comparison below
            if isinstance(value, float) and not math.isfinite(value):
                where = option_name(TrainConfig, field)
                raise ConfigError(f"{where}{'' if where.endswith('=') else ' '}{value}: must be a finite number")
        self.loss = canonical_loss(self.loss)
        name = lambda n: option_name(TrainConfig, n)  # noqa: E731 - the option the user can type
        from lmdisp.train.losses import LOCATIONS

        require(self.loss in loss_choices(), f"--loss {self.loss!r}: choose one of {', '.join(loss_choices())}")
        require(self.location in LOCATIONS, f"--location {self.location!r}: choose one of {', '.join(LOCATIONS)}")
        require(self.lambda_disp >= 0, f"--lambda must be >= 0 (got {self.lambda_disp})")
        require(self.tau > 0, f"--tau must be > 0 (got {self.tau})")
        require(0 < self.clamp < 1, f"{name('clamp')}{self.clamp}: must be in (0, 1)")
        require(self.max_tokens >= 2, f"{name('max_tokens')}{self.max_tokens}: must be >= 2")
        self.train_tokens = parse_tokens(self.train_tokens)
        require(self.train_tokens > 0, f"--train-tokens must be > 0 (got {self.train_tokens})")
        require(self.context_length >= 2, f"--context-length must be >= 2 (got {self.context_length})")
        require(self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be >= 1")
        require(self.packing in PACKINGS, f"{name('packing')}{self.packing}: choose one of {', '.join(PACKINGS)}")
        require(self.doc_tokens in DOC_TOKENS,
                f"{name('doc_tokens')}{self.doc_tokens}: choose one of {', '.join(DOC_TOKENS)}")
        self._check_global_batch()
        require(self.lr > 0, f"--lr must be > 0 (got {self.lr})")
        require(0 <= self.warmup_ratio < 1, f"{name('warmup_ratio')}{self.warmup_ratio}: must be in [0, 1)")
        require(self.precision in PRECISIONS, f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        require(self.dtype in DTYPES, f"{name('dtype')}{self.dtype}: choose one of {', '.join(DTYPES)}")
        require(self.init in ("pretrained", "scratch"), f"init {self.init!r}: pretrained or scratch")
        require(self.forget_every >= 1, f"{name('forget_every')}{self.forget_every}: must be >= 1")
        require(self.forget_schedule in FORGET_SCHEDULES,
                f"{name('forget_schedule')}{self.forget_schedule}: choose one of {', '.join(FORGET_SCHEDULES)}")
        require(self.forget_warmup >= 0, f"{name('forget_warmup')}{self.forget_warmup}: must be >= 0")
        require(self.warmup_steps >= 0, f"{name('warmup_steps')}{self.warmup_steps}: must be >= 0")
        require(0 <= self.min_lr_ratio < 1, f"{name('min_lr_ratio')}{self.min_lr_ratio}: must be in [0, 1)")
        require(0 <= self.distill_alpha <= 1, f"{name('distill_alpha')}{self.distill_alpha}: must be in [0, 1]")
        require(self.distill_temperature > 0, f"{name('distill_temperature')}{self.distill_temperature}: must be > 0")
        require(self.noise_alpha >= 0, f"{name('noise_alpha')}{self.noise_alpha}: must be >= 0")
        check_output_option(self.output)
        self.resume = self.resume or bool(self.resume_from)
        require(not self.resume or self.output, "--resume needs --output: the run folder to continue")
        for field in ("logging_steps", "save_steps"):
            require(getattr(self, field) >= 1, f"{name(field)} must be >= 1")
        for field in ("condensation_every", "eval_every", "save_total_limit", "eval_points", "weight_decay"):
            require(getattr(self, field) >= 0, f"{name(field)} must be >= 0 (got {getattr(self, field)})")
        for field in ("condensation_sequences", "lora_r", "lora_alpha", "forget_lr", "max_grad_norm"):
            require(getattr(self, field) > 0, f"{name(field)} must be > 0 (got {getattr(self, field)})")
        require(self.num_proc is None or self.num_proc >= 1, f"{name('num_proc')} must be >= 1")
        require(self.eval_limit is None or self.eval_limit > 0, f"{name('eval_limit')} must be > 0")
        for field in ("adam_beta1", "adam_beta2"):
            require(0 <= getattr(self, field) < 1, f"{name(field)} must be in [0, 1) (got {getattr(self, field)})")
        self._check_tau()
        self.report_to = check_report_to(self.report_to)

    def _check_global_batch(self) -> None:
        """With a fixed global batch, batch_size x grad_accum is its split on one process (fidelity T1)."""
        g = self.global_batch
        require(g >= 0, f"{option_name(TrainConfig, 'global_batch')}{g}: must be >= 0")
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
        require(self.tau >= TAU_MIN, f"--tau {self.tau:g}: must be >= {TAU_MIN:g} (the regulariser scales as 1 / tau)")
        if self.regularizer in ("dispersion", "l2_repel", "infonce_cos") and not 0.01 <= self.tau <= 100:
            import logging

            logging.getLogger("lmdisp").warning(
                "--tau %g is far from the paper's range (0.1 .. 10): the regulariser scales as 1 / tau, so "
                "lambda * reg %s the cross-entropy", self.tau, "dominates" if self.tau < 0.01 else "barely moves")

    @property
    def regularizer(self) -> str | None:
        """The `lmdisp.train.losses` name of the active regulariser (None for the baselines)."""
        return regularizers().get(self.loss)

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

    def train_blocks(self) -> int:
        """Training blocks the budget reads: train_tokens / context_length, or with a global
        batch every block of the ceil(tokens / step) steps (fidelity T3)."""
        return train_blocks(self)

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


# `lmdisp prepare`: the data fields of a training run, to build its token shards on their own
# (e.g. on a CPU node before the GPU job). Same names, defaults and help as TrainConfig's, so
# a training config YAML can be passed as it is (its other keys are refused).
PREPARE_FIELDS = ("model", "tokenizer", "dataset", "text_field", "subset", "split", "packing", "doc_tokens",
                  "train_tokens", "global_batch", "context_length", "condensation_sequences", "num_proc", "cache_dir", "trust_remote_code")


def train_blocks(cfg) -> int:
    """`TrainConfig.train_blocks` for any config with the data fields (PrepareConfig too)."""
    if cfg.global_batch:
        per_step = cfg.global_batch * cfg.context_length
        return -(-cfg.train_tokens // per_step) * cfg.global_batch
    return max(1, cfg.train_tokens // cfg.context_length)


def _prepare_post_init(self) -> None:
    self.train_tokens = parse_tokens(self.train_tokens)
    require(self.train_tokens > 0, f"--train-tokens must be > 0 (got {self.train_tokens})")
    require(self.context_length >= 2, f"--context-length must be >= 2 (got {self.context_length})")
    require(self.condensation_sequences >= 0, "condensation_sequences must be >= 0")
    require(self.global_batch >= 0, "global_batch must be >= 0")
    require(self.packing in PACKINGS, f"packing {self.packing!r}: choose one of {', '.join(PACKINGS)}")
    require(self.doc_tokens in DOC_TOKENS, f"doc_tokens {self.doc_tokens!r}: choose one of {', '.join(DOC_TOKENS)}")


def _prepare_config() -> type:
    import dataclasses
    import typing

    hints = typing.get_type_hints(TrainConfig)
    fields = []
    for name in PREPARE_FIELDS:
        f = TrainConfig.__dataclass_fields__[name]
        kwargs = {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {"default": f.default}
        fields.append((name, hints[name], dataclasses.field(metadata=f.metadata, **kwargs)))
    doc = "The data settings of a training run: what `lmdisp prepare` needs to build its token shards."
    return dataclasses.make_dataclass("PrepareConfig", fields, namespace={"__post_init__": _prepare_post_init,
                                                                          "__doc__": doc,
                                                                          "__module__": __name__})


PrepareConfig = _prepare_config()
