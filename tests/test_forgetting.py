"""Active forgetting's learning rates: the scheduler `DispersionTrainer` builds, stepped like the
Trainer steps it, against a direct computation of every optimiser step's LR (docs/fidelity.md B4).

Direct computation, for optimiser step g = 1..T (T total steps, K the reset interval, peak P):
- authors: e = (g * floor(T / K)) mod T, W = floor(0.08 T), lr = P * (e / W if e < W else
  (T - e) / (T - W)), e capped at T - 1 (their ActiveForgettingLRScheduler);
- cycle: t = (g - 1) mod K, lr = P * ((t + 1) / W if t < W else (K - t) / (K - W));
- the body: HF's cosine with warm-up ceil(0.2 T), index g - 1.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from lmdisp.train.config import TrainConfig
from lmdisp.train.forgetting import forgetting_scheduler

PEAK, BODY_LR = 5e-5, 5e-5


def authors_lr(g: int, T: int, K: int, ratio: float = 0.08) -> float:
    e = min((g * (T // K)) % T, T - 1)
    W = int(T * ratio)
    return PEAK * (e / max(1, W) if e < W else (T - e) / (T - W))


def cycle_lr(g: int, K: int, W: int) -> float:
    t = (g - 1) % K
    return PEAK * ((t + 1) / W if t < W else max(0.0, (K - t) / (K - W)))


def body_lr(g: int, T: int) -> float:
    W, s = math.ceil(0.2 * T), g - 1
    return BODY_LR * (s / W if s < W else 0.5 * (1 + math.cos(math.pi * (s - W) / (T - W))))


def stepped_lrs(T: int, **cfg) -> tuple[list[float], list[float]]:
    """(embedding LR, body LR) used by optimiser steps 1..T."""
    cfg = TrainConfig(loss="active-forgetting", forget_lr=PEAK, lr=BODY_LR, **cfg)
    body, emb = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [body]}, {"params": [emb], "lr": PEAK, "lmdisp_embeddings": True}],
                            lr=BODY_LR)
    args = SimpleNamespace(get_warmup_steps=lambda n: math.ceil(0.2 * n))
    sched = forgetting_scheduler(SimpleNamespace(run_config=cfg, args=args), opt, T)
    out_emb, out_body = [], []
    for _ in range(T):
        out_body.append(opt.param_groups[0]["lr"])
        out_emb.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    return out_emb, out_body


@pytest.mark.parametrize("T,K", [(1525, 1000), (1526, 1000), (400, 1000), (5000, 1000), (37, 10)])
def test_authors_schedule_equals_direct_computation(T, K):
    emb, body = stepped_lrs(T, forget_every=K)  # the defaults: authors, warm-up 0.08
    assert emb == pytest.approx([authors_lr(g, T, K) for g in range(1, T + 1)], rel=1e-9, abs=1e-15)
    assert body == pytest.approx([body_lr(g, T) for g in range(1, T + 1)], rel=1e-9, abs=1e-15)


def test_authors_schedule_properties_in_the_gpt2_setting():
    """docs/fidelity.md B4: GPT-2 at one GPU (T = 1526, K = 1000): after the reset at step 1000 the
    embedding LR never restarts its warm-up and stays <= 1.9e-5; T < K: it is 0 throughout."""
    emb, _ = stepped_lrs(1526, forget_every=1000)
    assert max(emb[1000:]) <= 1.9e-5 and emb[1000] == pytest.approx(PEAK * (1526 - 1001) / (1526 - 122))  # step 1001
    assert max(emb) == pytest.approx(PEAK) and emb.index(max(emb)) == 121   # step 122 = floor(0.08 T)
    assert set(stepped_lrs(400, forget_every=1000)[0]) == {0.0}


@pytest.mark.parametrize("T,K,W", [(60, 20, 5), (45, 10, 3)])
def test_cycle_schedule_equals_direct_computation(T, K, W):
    emb, _ = stepped_lrs(T, forget_every=K, forget_schedule="cycle", forget_warmup=W)
    assert emb == pytest.approx([cycle_lr(g, K, W) for g in range(1, T + 1)], rel=1e-9, abs=1e-15)
    # a warm-up given as a fraction of T: the same curve with W = floor(ratio * T)
    emb_ratio, _ = stepped_lrs(T, forget_every=K, forget_schedule="cycle", forget_warmup=W / T)
    assert emb_ratio == pytest.approx(emb, rel=1e-9, abs=1e-15)
