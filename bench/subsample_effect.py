"""The measured effect of one deliberate difference (docs/fidelity.md L10): lmdisp draws the
256-token subsample once per sequence and shares it across the selected layers; the authors'
`DispersionLoss` draws one `randperm` per call, i.e. per layer, shared by every sequence.

    python bench/subsample_effect.py            # SmolLM2-135M, offline, CPU, about a minute

Both are uniform 256-subsets, so the loss has the same expectation; this measures how far
the two estimators' means and spreads differ, and how far the gradient each gives (w.r.t.
the hidden states) is from the full-sequence gradient, on real hidden states (4 builtin
texts of 512 tokens, all 30 blocks, dispersion with tau 1 and clamp 0.1), over 40 draws each.
Writes results/bench/subsample_effect.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

from lmdisp.data import load_corpus, sample_texts
from lmdisp.models import load_model
from lmdisp.train.losses import get_loss, regularizer, select_layers

OPTS = {"tau": 1.0, "clamp": 0.1}


def per_layer_draw(hidden, max_tokens: int, gen: torch.Generator) -> torch.Tensor:
    """The authors' scheme: one random subset per layer, shared by the batch's sequences."""
    layers = select_layers(len(hidden) - 1, "all")
    losses = []
    for i in layers:
        idx = torch.randperm(hidden[i].shape[1], generator=gen)[:max_tokens].sort().values
        losses.append(get_loss("dispersion")(hidden[i][:, idx], None, **OPTS))
    return torch.stack(losses).mean()


def stats(fn, hidden, draws: int, full_grad):
    values, cos = [], []
    for d in range(draws):
        hs = [h.detach().clone().requires_grad_(True) for h in hidden]
        loss = fn(hs, torch.Generator().manual_seed(d))
        grads = torch.autograd.grad(loss, hs[1:])
        g = torch.cat([x.flatten() for x in grads])
        values.append(loss.item())
        cos.append(torch.nn.functional.cosine_similarity(g, full_grad, dim=0).item())
    v = torch.tensor(values, dtype=torch.float64)
    c = torch.tensor(cos, dtype=torch.float64)
    return {"mean": v.mean().item(), "std": v.std().item(), "grad_cos_to_full": c.mean().item()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--output", default="results/bench/subsample_effect")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    loaded = load_model("smollm2-135m", dtype="float32", device="cpu")
    texts = sample_texts(load_corpus("builtin"), 4, seed=0)
    enc = loaded.tokenizer(texts, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        hidden = list(loaded.model(**enc, output_hidden_states=True).hidden_states)
    hs = [h.clone().requires_grad_(True) for h in hidden]
    full = regularizer(hs, None, "dispersion", max_tokens=512, **OPTS)
    full_grad = torch.cat([g.flatten() for g in torch.autograd.grad(full, hs[1:])])
    ours = stats(lambda h, g: regularizer(h, None, "dispersion", max_tokens=256, generator=g, **OPTS),
                 hidden, args.draws, full_grad)
    theirs = stats(lambda h, g: per_layer_draw(h, 256, g), hidden, args.draws, full_grad)
    report = {"model": "smollm2-135m", "sequences": 4, "tokens": 512, "subsample": 256, "draws": args.draws,
              "full_sequence_loss": full.item(), "per_sequence": ours, "per_layer": theirs}
    md = ("| subsample drawn | loss mean | loss std over draws | gradient cosine to the full-sequence "
          "gradient |\n|---|---:|---:|---:|\n"
          + "".join(f"| {name} | {r['mean']:.5f} | {r['std']:.2e} | {r['grad_cos_to_full']:.4f} |\n"
                    for name, r in (("per sequence, shared by layers (lmdisp)", ours),
                                    ("per layer, shared by sequences (authors)", theirs)))
          + f"\nSmolLM2-135M, 4 builtin texts x 512 tokens, all 30 blocks, dispersion (tau 1, clamp 0.1), "
            f"256 of 512 tokens, {args.draws} draws each; full-sequence loss {full.item():.5f} (a sum over "
            "4x as many pairs: log 4 = 1.386 higher). "
            "`python bench/subsample_effect.py`.\n")
    publish("subsample_effect", report, md, args.output, readme=False)


if __name__ == "__main__":
    main()
