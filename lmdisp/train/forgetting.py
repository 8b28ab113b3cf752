"""Active forgetting (Chen et al. 2023, "language-model plasticity"), all of it in one place.

Every K steps the input token embeddings are re-initialised from N(0, 0.02) and their
optimiser state is cleared; the embeddings have their own parameter group and LR schedule
while the body keeps the run's cosine schedule. `DispersionTrainer` calls
`forgetting_optimizer` / `forgetting_scheduler` when `--loss active-forgetting`, and the run
adds the `ActiveForgetting` callback.

The embeddings' LR multiplier at scheduler index s (the LR used by optimiser step s + 1),
with T total steps, peak `forget_lr`, W warm-up steps:

- `authors` (the paper preset; the authors' `ActiveForgettingLRScheduler`, after the
  language-model-plasticity fairseq trainer): one linear warm-up/decay curve over the whole
  run, W = floor(0.08 T), read at the index e = ((s + 1) * floor(T / K)) mod T:
      f(s) = lin(min(e, T - 1)),  lin(e) = e / W for e < W, else (T - e) / (T - W).
  With T < 2K (GPT-2 at one GPU: T = 1525, K = 1000) floor(T/K) = 1, so e = s + 1: the
  curve never restarts after a reset (the LR after step 1000 stays below 2e-5 at peak
  5e-5); with T < K, floor(T/K) = 0 and the embeddings' LR is 0 for the whole run.
- `cycle`: lmdisp's earlier schedule, restarted at every reset: with t = s mod K,
      f(s) = (t + 1) / W for t < W, else (K - t) / (K - W).
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback


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


def authors_schedule(total: int, every: int, warmup_ratio: float = 0.08):
    """The authors' embedding multiplier (see the module docstring)."""
    warmup = int(total * warmup_ratio)
    speed = total // max(1, every)

    def factor(step: int) -> float:
        e = min(((step + 1) * speed) % max(1, total), max(0, total - 1))
        if e < warmup:
            return e / max(1, warmup)
        return max(0.0, (total - e) / max(1, total - warmup))
    return factor


def forgetting_cycle(warmup: int, every: int):
    """The embeddings' own multiplier, restarted at each reset: warm-up, then linear decay."""
    def factor(step: int) -> float:
        t = step % every
        if t < warmup:
            return (t + 1) / max(1, warmup)
        return max(0.0, (every - t) / max(1, every - warmup))
    return factor


def embedding_schedule(kind: str, total: int, every: int, warmup: float):
    """The embeddings' multiplier: `authors` or `cycle`; `warmup` < 1 is a fraction of the
    total steps (authors: 0.08), >= 1 a number of steps."""
    if kind == "authors":
        return authors_schedule(total, every, warmup if warmup < 1 else warmup / max(1, total))
    return forgetting_cycle(int(warmup * total) if warmup < 1 else int(warmup), every)


def forgetting_optimizer(trainer) -> torch.optim.Optimizer:
    """AdamW with the body's usual decay / no-decay groups and one group for the embeddings
    (weight decay as the body's decay group, as in the authors' code)."""
    cfg, model = trainer.run_config, trainer.model
    body, emb = split_embedding_params(model)
    decay = set(trainer.get_decay_parameter_names(model))
    named = dict(model.named_parameters())
    groups = [
        {"params": [p for n, p in named.items() if n in body and n in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named.items() if n in body and n not in decay], "weight_decay": 0.0},
        # the embeddings decay like the body, as in the authors' optimiser groups
        {"params": [named[n] for n in emb], "weight_decay": cfg.weight_decay, "lr": cfg.forget_lr,
         "lmdisp_embeddings": True},
    ]
    args = trainer.args
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def forgetting_scheduler(trainer, optimizer, num_training_steps: int):
    """The body's cosine-with-warm-up next to the embeddings' restarted cycle."""
    cfg = trainer.run_config
    body = cosine_with_warmup(trainer.args.get_warmup_steps(num_training_steps), num_training_steps)
    emb = embedding_schedule(cfg.forget_schedule, num_training_steps, cfg.forget_every, cfg.forget_warmup)
    lambdas = [emb if g.get("lmdisp_embeddings") else body for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class ActiveForgetting(TrainerCallback):
    """Every `every` steps, re-initialise the input embeddings from N(0, 0.02) and clear their
    optimiser state. Seeded by (seed, step), so a resumed run resets alike. With the
    trainer's telemetry attached, each reset logs `forgetting/resets` (the count so far)."""

    telemetry = None

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
        if self.telemetry is not None:
            self.telemetry.emit({"forgetting/resets": step // self.every})
