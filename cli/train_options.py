"""The options the training commands share (`midtrain`, `pretrain`, `distill`): one
signature, reused by `make_command`, so the commands cannot drift apart.

Precedence: TrainConfig defaults < --config FILE.yaml < --set key=value < explicit flags.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import List, Optional

import typer

from cli.ui import console


def _options(
    model: Optional[str] = typer.Option(None, help="Hub id, folder, .gguf, alias or random:<config> (default: gpt2)."),
    dataset: Optional[str] = typer.Option(None, help="wikitext, builtin, a local file/folder or an HF id (default: wikitext)."),
    text_field: Optional[str] = typer.Option(None, help="Text column of a hub/local dataset."),
    loss: Optional[str] = typer.Option(None, help="ce | dispersion | decorrelation | l2-repel | orthogonalization | "
                                                  "infonce-cos | noisy-embedding | active-forgetting (default: ce)."),
    lambda_disp: Optional[float] = typer.Option(None, "--lambda", "--lambda-disp", help="Regulariser weight (default: 0.1)."),
    tau: Optional[float] = typer.Option(None, help="Temperature (default: 1.0)."),
    location: Optional[str] = typer.Option(None, help="all | early_half | late_half | last (default: all)."),
    train_tokens: Optional[str] = typer.Option(None, help="Token budget: 200M, 1.5B, 50k (default: 200M)."),
    context_length: Optional[int] = typer.Option(None, help="Tokens per packed block (default: 1024)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate, before sqrt(world size) scaling (default: 5e-5)."),
    batch_size: Optional[int] = typer.Option(None, help="Sequences per device per micro-step (default: 32)."),
    grad_accum: Optional[int] = typer.Option(None, help="Gradient accumulation steps (default: 4)."),
    seed: Optional[int] = typer.Option(None, help="Seed for init, data order, noise and subsampling (default: 1)."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Train LoRA adapters only (needs peft)."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 where supported) | bf16 | fp16 | fp32."),
    gradient_checkpointing: Optional[bool] = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations (default: on)."),
    condensation_every: Optional[int] = typer.Option(None, help="Steps between condensation snapshots, 0 = off (default: 100)."),
    logging_steps: Optional[int] = typer.Option(None, help="Steps between log records (default: 10)."),
    save_steps: Optional[int] = typer.Option(None, help="Steps between checkpoints (default: 500)."),
    report_to: Optional[str] = typer.Option(None, help="none | tensorboard | wandb (the Trainer's report_to)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder: new, or the one to --resume."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue the run in --output."),
    teacher: Optional[str] = typer.Option(None, help="distill only: the teacher model (same tokenizer)."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code/--no-trust-remote-code"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of TrainConfig fields."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any TrainConfig field, e.g. --set warmup_ratio=0.1."),
) -> None:
    """(signature only)"""


def make_command(command: str, doc: str, **fixed):
    """A Typer command with the shared signature that trains through `lmdisp.training`."""

    @functools.wraps(_options)
    def cmd(**kwargs) -> None:
        from lmdisp.config import load_config, parse_sets
        from lmdisp.trainer import TrainConfig
        from lmdisp.training import run_train

        config, sets = kwargs.pop("config"), kwargs.pop("set_") or []
        flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items() if v is not None}
        cfg = load_config(TrainConfig, config, {**parse_sets(sets, TrainConfig), **fixed, **flags})
        run = run_train(cfg, command=command, progress=True)
        if int(os.environ.get("RANK", "0")) == 0:  # one line, from the main process only
            console.print(f"{command}: {run.steps} steps; final model [bold]{run.final}[/]; run folder [bold]{run.path}[/]")

    cmd.__doc__ = doc
    cmd.__name__ = command
    return cmd
