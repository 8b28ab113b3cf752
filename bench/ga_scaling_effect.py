"""The measured effect of one deliberate difference (docs/fidelity.md T9): gradient
accumulation scaling.

lmdisp's loss gives the true mean gradient over the accumulated batch. The authors' training
loss is a per-micro-batch mean that, under transformers >= 4.48, the Trainer no longer divides
by the accumulation steps GA: their gradient is GA x the mean. Adam is invariant to a
constant gradient scale, so what can change is the grad-norm clipping (1.0) and Adam's eps.

    python bench/ga_scaling_effect.py        # CPU, offline, a few minutes

Trains the toy model (tiny GPT-2, builtin corpus, dispersion lambda 0.1) with GA 4 twice per
seed: lmdisp's scaling and the authors' (the same loss multiplied by GA), and compares the
share of steps whose pre-clip gradient norm exceeds the clip, and the final training
cross-entropy. Toy scale: the size of the effect on GPT-2 is not implied, only its mechanism.
Writes results/bench/ga_scaling_effect.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

import lmdisp.train.run as train_run  # noqa: E402
from lmdisp.train.config import TrainConfig  # noqa: E402
from lmdisp.train.trainer import DispersionTrainer  # noqa: E402

GA = 4
SETTING = dict(model="random:tiny-gpt2", dataset="builtin", loss="dispersion", context_length=64, batch_size=8,
               grad_accum=GA, lr=1e-3, train_tokens=64 * 8 * GA * 120, gradient_checkpointing=False,
               condensation_every=0, logging_steps=1, save_steps=10_000)


class AuthorsGAScale(DispersionTrainer):
    """The authors' effective loss under current transformers: GA x lmdisp's."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not model.training:
            return out
        k = self._ga_steps
        return (out[0] * k, *out[1:]) if return_outputs else out * k


def train(scaling: str, seed: int, root: Path) -> dict:
    train_run.DispersionTrainer = AuthorsGAScale if scaling == "authors" else DispersionTrainer
    try:
        run = train_run.run_train(TrainConfig(**SETTING, seed=seed, output=str(root / f"{scaling}-{seed}")))
    finally:
        train_run.DispersionTrainer = DispersionTrainer
    logs = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    norms = [r["grad_norm"] for r in logs if "grad_norm" in r]
    ces = [r["ce"] for r in logs if "ce" in r]
    return {"steps": run.steps, "clipped_share": sum(n > 1.0 for n in norms) / len(norms),
            "median_grad_norm": sorted(norms)[len(norms) // 2], "final_ce": sum(ces[-10:]) / len(ces[-10:])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--output", default="results/bench/ga_scaling_effect")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scaling in ("lmdisp", "authors"):
            results[scaling] = [train(scaling, s, Path(tmp)) for s in args.seeds]
    rows = []
    for scaling, label in (("lmdisp", "lmdisp: mean gradient"), ("authors", f"authors: {GA} x mean gradient")):
        rs = results[scaling]
        cells = [", ".join(fmt.format(r[key]) for r in rs) for key, fmt in
                 (("clipped_share", "{:.0%}"), ("median_grad_norm", "{:.2f}"), ("final_ce", "{:.3f}"))]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    steps = results["lmdisp"][0]["steps"]
    md = ("| scaling | steps clipped (clip 1.0) | median pre-clip grad norm | final CE (mean of last 10 logs) |\n"
          "|---|---:|---:|---:|\n" + "\n".join(rows)
          + f"\n\nPer seed ({', '.join(map(str, args.seeds))}): tiny GPT-2, builtin corpus, dispersion lambda 0.1, "
            f"GA {GA}, {steps} steps, lr 1e-3. Toy scale. `python bench/ga_scaling_effect.py`.\n")
    publish("ga_scaling_effect", {"setting": SETTING, "results": results}, md, args.output, readme=False)


if __name__ == "__main__":
    main()
