"""`PostTrainConfig`: every setting of a post-training run (`lmdisp sft | dpo | grpo`).

Same machinery as `TrainConfig` (flags, `--set`, YAML, config.yaml in the run folder, the
same run-folder and resume rules); `trl_args` passes any other field of TRL's SFTConfig /
DPOConfig / GRPOConfig through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at

from lmdisp.config import (MODEL_PANEL, OUTPUT_PANEL, NonNegative, NonNegativeInt, Normalize, OpenUnit, Positive,
                           PositiveInt, option, option_name, require, validate)
from lmdisp.train.config import REGULARIZERS, Location, canonical_loss, check_report_to

OBJECTIVES = ("sft", "dpo", "grpo")
_MODEL, _DATA, _LOSS, _OPT, _RL, _LOG, _RUN = (MODEL_PANEL, "Data", "Loss", "Budget and optimiser", "DPO and GRPO",
                                               "Logging", OUTPUT_PANEL)
_GRPO = ("grpo",)
# `ce` (TRL's objective alone) or a regulariser added to it (the `lmdisp.train.losses` registry)
PostLossName = Annotated[Literal["ce", "dispersion", "dispersion-torchtitan", "decorrelation", "l2-repel",
                                 "l2-repel-paper", "orthogonalization", "infonce-cos"], Normalize(canonical_loss)]


def posttrain_losses() -> tuple[str, ...]:
    return ("ce", *REGULARIZERS)


@dataclass
class PostTrainConfig:
    """Every setting of an SFT, DPO or GRPO run with an optional hidden-state regulariser."""

    # -- model and data
    model: str = option("smollm2-135m", "Hub id, folder, .gguf, alias (default: the bundled SmolLM2-135M-Instruct) "
                        "or a training run folder.", short="-m", panel=_MODEL)
    dataset: str | None = option(None, "A .jsonl/.json file or folder, or an HF id: SFT `messages` or `prompt` + "
                          "`completion`; DPO `prompt`, `chosen`, `rejected`; GRPO `prompt` (+ columns the "
                          "rewards read, e.g. `answer`).", panel=_DATA)
    split: str = option("train", "Dataset split.", cli="set")
    tokenizer: str | None = option(None, "Tokenizer to use instead of the model's own (needs a chat template "
                                   "for conversational data).", panel=_MODEL)
    # -- the loss
    loss: PostLossName = option("ce", "ce (TRL's objective alone) or a regulariser added to it.", panel=_LOSS)
    lambda_disp: NonNegative = option(0.1, "Regulariser weight.", panel=_LOSS, flag="--lambda")
    tau: Positive = option(1.0, "Temperature of the regulariser.", panel=_LOSS)
    location: Location = option("all", "Blocks regularised.", panel=_LOSS)
    reg_tokens: Literal["completion", "all"] = option("completion", "Tokens in the regulariser's pairs: completion (those TRL's loss "
                             "scores) | all (every non-padding token, prompt included).", panel=_LOSS)
    clamp: OpenUnit = option(0.1, "Straight-through arccos band of dispersion/orthogonalization.", cli="set")
    max_tokens: Annotated[int, at.Ge(2)] = option(256, "Tokens subsampled per sequence for the pairwise term.", cli="set")
    # -- budget and optimiser
    max_steps: PositiveInt = option(100, "Optimiser steps.", panel=_OPT)
    lr: Positive = option(1e-5, "Peak learning rate (linear decay, TRL's default schedule).", panel=_OPT)
    batch_size: PositiveInt = option(8, "Sequences (GRPO: completions) per device per micro-step.", panel=_OPT)
    grad_accum: PositiveInt = option(1, "Gradient accumulation steps.", panel=_OPT)
    max_length: PositiveInt = option(512, "SFT/DPO: longest tokenised example (truncated beyond).", panel=_OPT)
    seed: int = option(1, "Seed for init, data order, sampling and subsampling.", panel=_OPT)
    precision: Literal["auto", "bf16", "fp32"] = option("auto", "Mixed precision (auto: bf16 where supported).",
                                                        panel=_OPT)
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass.", cli="set")
    trl_args: dict[str, Any] = option(None, "Any other field of TRL's SFTConfig / DPOConfig / GRPOConfig, e.g. "
                                      "{assistant_only_loss: true, loss_type: dapo}.", cli="set", factory=dict)
    # -- DPO and GRPO
    beta: float | None = option(None, "DPO: preference temperature (TRL: 0.1); GRPO: KL weight (TRL: 0).",
                                panel=_RL)
    reward: str = option("answer", "GRPO rewards, comma list: answer (last number == the `answer` column), "
                         "length:N (-|words - N| / N), regex:PATTERN (1 if it matches).", panel=_RL)
    num_generations: PositiveInt = option(4, "GRPO: completions per prompt.", panel=_RL, commands=_GRPO)
    max_completion_length: PositiveInt = option(32, "GRPO: tokens generated per completion.", panel=_RL,
                                       commands=_GRPO)
    temperature: float = option(1.0, "GRPO: sampling temperature.", cli="set")
    # -- logging
    logging_steps: PositiveInt = option(10, "Steps between log records.", panel=_LOG)
    save_steps: PositiveInt = option(50, "Steps between checkpoints.", panel=_LOG)
    save_total_limit: int = option(2, "Checkpoints kept.", cli="set")
    condensation_every: NonNegativeInt = option(25, "Steps between condensation snapshots of the held-out texts (0: off).",
                                     panel=_LOG)
    condensation_sequences: NonNegativeInt = option(8, "Held-out blocks measured at each snapshot.", cli="set")
    heldout: str = option("builtin", "Corpus of the held-out blocks (as midtrain's --dataset).", cli="set")
    heldout_length: PositiveInt = option(128, "Tokens per held-out block.", cli="set")
    report_to: str = option("none", "none | all | a comma list of the Trainer's integrations.", panel=_LOG)
    # -- the run folder
    objective: Literal["sft", "dpo", "grpo"] = option("sft", "sft | dpo | grpo (set by the command).", cli="fixed")
    trust_remote_code: bool = option(False, "Allow model repos to run their own Python code (only for repos "
                                     "you trust).", panel=_MODEL)
    output: str | None = option(None, "Run folder: new, or the one to --resume.", short="-o", panel=_RUN)
    results_dir: str = option("results", "Where timestamped run folders go.", panel=_RUN)
    resume: bool = option(False, "Continue the run in --output from its newest complete checkpoint.", panel=_RUN)
    resume_from: str | None = option(None, "Continue from this checkpoint (checkpoint-N or a path).", cli="set")

    def __post_init__(self):
        validate(self)  # each field's type, choices and range (lmdisp.config); below: cross-field rules
        name = lambda n: option_name(PostTrainConfig, n)  # noqa: E731
        require(bool(self.dataset), f"{self.objective} needs --dataset: a .jsonl file or an HF dataset id")
        require(self.objective != "grpo" or self.num_generations >= 2,
                f"{name('num_generations')} must be >= 2 (GRPO compares completions of one prompt)")
        self.resume = self.resume or bool(self.resume_from)
        require(not self.resume or self.output, "--resume needs --output: the run folder to continue")
        if self.output:
            parent = Path(self.output).expanduser().resolve().parent
            require(parent.is_dir(), f"--output: parent folder does not exist: {parent}")
        if self.objective == "grpo":
            from lmdisp.train.rewards import reward_functions

            reward_functions(self.reward)  # a bad reward spec is refused before anything loads
        self.report_to = check_report_to(self.report_to)

    @property
    def has_regularizer(self) -> bool:
        """Whether a `lmdisp.train.losses` regulariser is added (its registry name is `loss`)."""
        return self.loss in REGULARIZERS

    def scaled_lr(self, world_size: int) -> float:
        return self.lr

    def batch_record(self, world: int) -> dict:
        """What the manifest records about the optimisation on `world` processes."""
        return {"world_size": world, "global_batch": self.batch_size * self.grad_accum * world,
                "per_device_batch": self.batch_size, "grad_accum": self.grad_accum, "max_steps": self.max_steps,
                "learning_rate": self.lr, "learning_rate_rule": f"lr {self.lr}, not scaled (TRL's own)"}

    def method_label(self) -> str:
        """`sft` / `sft + dispersion (lambda=0.1)`: the report label."""
        if self.loss == "ce":
            return self.objective
        parts = [f"lambda={self.lambda_disp}"] + ([f"tau={self.tau}"] if self.tau != 1.0 else []) \
            + ([f"tokens={self.reg_tokens}"] if self.reg_tokens != "completion" else [])
        return f"{self.objective} + {self.loss} ({', '.join(parts)})"

    def base_label(self) -> str:
        return self.model
