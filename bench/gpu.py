"""The GPU benchmark: measurement, training and evaluation speed on one card, in one run.

    make bench-gpu                                  # one GPU, under 8 minutes on an H100
    python bench/gpu.py --parts measure,train       # a subset
    python bench/gpu.py --smoke                     # CPU, tiny sizes: checks the script runs (a test does)

Three parts, each timed with the device synchronised around the timed region:

- measure: SmolLM2-135M's architecture (`random:smollm2-135m`, fresh weights: the time does
  not depend on them), 100 texts x 512 tokens from the builtin corpus. Bare forward passes
  with hidden states (batch 1, the floor any method pays), `lmdisp.measure.measure_model` in
  float32 and bfloat16 (its GPU default batch), and the authors' package
  (`embedding_condensation.measure_embedding_condensation`, float32) when installed, whose
  mean matrices must match lmdisp's float32 ones.
- train: GPT-2 124M's shape (fresh weights) at the paper's micro-batch, 32 x 1024 tokens,
  bf16, gradient checkpointing, lmdisp's own `TrainingArguments`. A plain
  `transformers.Trainer` with cross-entropy, lmdisp's `DispersionTrainer` with `ce` and with
  each regulariser, interleaved over rounds; step time = median interval between
  consecutive optimiser steps after the warm-up steps. Targets: lmdisp ce / plain <= 1.02,
  dispersion / ce <= 1.02.
- eval: `bench/eval_speed.py` on a generated multiple-choice task (lm-eval, batch 1 vs
  lmdisp's default), same accuracy required.

Runs air-gapped: it needs the lmdisp checkout and its dependencies only (see the README,
"A GPU benchmark on an air-gapped node", for carrying them as wheels). Writes
results/bench/gpu.json and results/bench/gpu.md and, with `--readme` (`make bench-gpu
README=1`), fills the README block (never with --smoke).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "gpu")
sys.path.insert(0, str(REPO))

from bench.common import device_name, load_average, load_note, publish, readme_flag, show, spread, verdict  # noqa: E402,E501

REGULARIZERS = ("dispersion", "decorrelation", "l2-repel", "orthogonalization", "infonce-cos")
SIZES = {  # full: the issue's settings; smoke: CPU-sized
    "full": {"measure_model": "random:smollm2-135m", "repetitions": 100, "max_length": 512,
             "train_shape": (12, 768, 12, 50257), "batch": 32, "context": 1024, "warmup": 3, "steps": 10,
             "rounds": 2, "eval_model": "smollm2-135m", "eval_examples": 200, "eval_rounds": 2},
    "smoke": {"measure_model": "random:tiny-llama", "repetitions": 3, "max_length": 64,
              "train_shape": (2, 64, 2, 1000), "batch": 2, "context": 64, "warmup": 1, "steps": 2,
              "rounds": 1, "eval_model": "random:tiny-llama", "eval_examples": 8, "eval_rounds": 1},
}
TARGET_CE_VS_PLAIN = 1.02
TARGET_DISP_VS_CE = 1.02
PARITY_ATOL = 1e-4  # float32 on a GPU: TF32 is off by default for matmuls, reductions differ in order


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(device: str, fn):
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return seconds, out, peak


# ----------------------------------------------------------------------------- measure

def bench_measure(size: dict, device: str) -> dict:
    import numpy as np
    import torch

    from lmdisp.data import load_corpus, sample_texts
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.measure.run import measure_model, tokenize
    from lmdisp.models import load_model

    reps, length, spec = size["repetitions"], size["max_length"], size["measure_model"]
    texts = sample_texts(load_corpus("builtin"), reps, seed=0, min_words=2 * length, max_words=int(2.5 * length))
    rows, matrices = {}, {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(spec, dtype=dtype, device=device)
        enc = tokenize(loaded.tokenizer, texts, length)
        cfg = MeasureConfig(models=[spec], dataset="builtin", repetitions=reps, max_length=length, dtype=dtype)

        def floor():
            with torch.inference_mode():
                for r in range(reps):
                    loaded.model(**{k: v[r:r + 1].to(device) for k, v in enc.items()}, output_hidden_states=True)

        floor()  # warm-up: kernels, allocator
        rows[f"forward passes ({dtype})"] = _timed(device, floor)
        rows[f"lmdisp ({dtype})"] = seconds, result, peak = _timed(device, lambda: measure_model(loaded, texts, cfg))
        matrices[dtype] = result.mean_matrices
        if dtype == "float32":
            try:
                from embedding_condensation import measure_embedding_condensation
            except ImportError:
                measure_embedding_condensation = None
            if measure_embedding_condensation is not None:
                run = lambda: measure_embedding_condensation(  # noqa: E731
                    loaded.model, loaded.tokenizer, texts=texts, repetitions=reps, max_length=length, plot=False,
                    save_path=None, show_progress=False).cossim_by_layer
                rows["authors' package (float32)"] = seconds, mats, peak = _timed(device, run)
                matrices["authors"] = np.asarray(mats)
        del loaded
        if device == "cuda":
            torch.cuda.empty_cache()
    out = {"model": spec, "repetitions": reps, "max_length": length,
           "seconds": {k: v[0] for k, v in rows.items()}, "peak_mib": {k: v[2] for k, v in rows.items()}}
    if "authors" in matrices:
        diff = float(np.abs(matrices["authors"] - matrices["float32"]).max())
        out["parity"] = {"max_abs_diff": diff, "atol": PARITY_ATOL, "pass": diff <= PARITY_ATOL}
    else:
        out["parity"] = None  # the authors' package is not installed
    return out


# ----------------------------------------------------------------------------- train

class _Blocks:
    """Random token blocks, the same for every variant."""

    def __init__(self, n: int, context: int, vocab: int):
        import torch

        self.ids = torch.randint(0, vocab, (n, context), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        import torch

        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _step_timer(device: str):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            self.ends.append(time.perf_counter())

    return StepTimer()


def train_variant(variant: str, size: dict, device: str, tmp: Path) -> tuple[float, float | None]:
    """(median step seconds after warm-up, peak MiB) of one variant on fresh weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from lmdisp.train.config import TrainConfig
    from lmdisp.train.run import training_arguments
    from lmdisp.train.trainer import DispersionTrainer

    n_layer, n_embd, n_head, vocab = size["train_shape"]
    steps = size["warmup"] + size["steps"]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab,
                                       n_positions=max(1024, size["context"])))
    cfg = TrainConfig(model="bench", loss="ce" if variant == "plain" else variant, batch_size=size["batch"],
                      grad_accum=1, context_length=size["context"], precision="bf16" if device == "cuda" else "fp32",
                      gradient_checkpointing=True, condensation_every=0, logging_steps=steps, save_steps=10**6,
                      warmup_ratio=0.0, trainer_args={"save_strategy": "no"})  # no checkpoint in the timing
    args = training_arguments(cfg, tmp / variant, steps, 1)
    timer = _step_timer(device)
    kwargs = dict(model=model, args=args, train_dataset=_Blocks(steps * size["batch"], size["context"], vocab),
                  data_collator=default_data_collator, callbacks=[timer])
    trainer = Trainer(**kwargs) if variant == "plain" else DispersionTrainer(run_config=cfg, **kwargs)
    trainer.remove_callback(PrinterCallback)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    intervals = [b - a for a, b in zip(timer.ends[size["warmup"] - 1:], timer.ends[size["warmup"]:])]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(intervals), peak


def bench_train(size: dict, device: str) -> dict:
    variants = ["plain", "ce", *REGULARIZERS]
    times: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(size["rounds"]):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                seconds, peaks[v] = train_variant(v, size, device, Path(tmp) / str(r))
                times[v].append(seconds)
                print(f"train round {r + 1}: {v} {seconds:.4f} s/step", file=sys.stderr, flush=True)
    best = {v: statistics.median(t) for v, t in times.items()}
    tokens = size["batch"] * size["context"]
    per_round = {"lmdisp ce / plain": [c / p for c, p in zip(times["ce"], times["plain"])],
                 **{f"{v} / ce": [x / c for x, c in zip(times[v], times["ce"])] for v in REGULARIZERS}}
    ratios = {k: statistics.median(v) for k, v in per_round.items()}
    goals = {"lmdisp ce / plain": TARGET_CE_VS_PLAIN, "dispersion / ce": TARGET_DISP_VS_CE}
    return {"shape": dict(zip(("layers", "width", "heads", "vocab"), size["train_shape"])), "batch": size["batch"],
            "context": size["context"], "precision": "bf16" if device == "cuda" else "fp32",
            "gradient_checkpointing": True, "warmup_steps": size["warmup"], "timed_steps": size["steps"],
            "rounds": size["rounds"], "step_s": best, "raw_step_s": times, "peak_mib": peaks,
            "tokens_per_s": {v: tokens / s for v, s in best.items()}, "ratios": ratios,
            "ratio_spread": {k: spread(v) for k, v in per_round.items()},
            "targets": {f"{k} <= {g}": verdict(spread(per_round[k]), g, at_most=True) for k, g in goals.items()}}


# ----------------------------------------------------------------------------- eval

def bench_eval(size: dict, device: str) -> dict:
    from bench import eval_speed
    from lmdisp.errors import LmdispError
    from lmdisp.models import check_model

    model = size["eval_model"]
    try:
        check_model(model)
    except LmdispError:  # the bundled weights are absent: same architecture, fresh weights
        model = "random:smollm2-135m"
    with tempfile.TemporaryDirectory() as tmp:
        eval_speed.main(["--model", model, "--examples", str(size["eval_examples"]), "--rounds",
                         str(size["eval_rounds"]), "--device", device, "--output", str(Path(tmp) / "eval")])
        return json.loads((Path(tmp) / "eval.json").read_text())


# ----------------------------------------------------------------------------- report

def main(argv=None) -> int:
    import torch
    import transformers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks that the script runs")
    ap.add_argument("--parts", default="measure,train,eval")
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    readme_flag(ap)
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.smoke:
        ap.error("no GPU visible: run on a GPU node, or pass --smoke for the CPU check")
    size = SIZES["smoke" if args.smoke else "full"]
    started = time.perf_counter()
    parts = {"measure": bench_measure, "train": bench_train, "eval": bench_eval}
    report = {"device": device_name(device), "smoke": args.smoke, "torch": torch.__version__,
              "cuda": torch.version.cuda, "transformers": transformers.__version__,
              "python": platform.python_version(), "load_average_before": load_average(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for name in args.parts.split(","):
        t0 = time.perf_counter()
        report[name] = parts[name](size, device)
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: done in {report[name]['wall_s']} s", file=sys.stderr, flush=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["load_average_after"] = load_average()
    publish("gpu", report, markdown(report), args.output, readme=args.readme and not args.smoke)
    return 0


def markdown(r: dict) -> str:
    lines = [f"On **{r['device']}** (torch {r['torch']}, CUDA {r['cuda']}, transformers {r['transformers']}), "
             f"{r['date']}; the whole benchmark took {r['wall_s']:.0f} s" + (" (smoke sizes)" if r["smoke"] else "")
             + "."]
    if "measure" in r:
        m = r["measure"]
        lines += ["", f"Measurement, `{m['model']}` (fresh weights), {m['repetitions']} x {m['max_length']} tokens:",
                  "", "| method | seconds | peak MiB |", "|---|---:|---:|"]
        for k, s in m["seconds"].items():
            peak = m["peak_mib"][k]
            lines.append(f"| {k} | {s:.2f} | {'' if peak is None else f'{peak:.0f}'} |")
        p = m["parity"]
        lines += ["", "lmdisp float32 vs the authors' package: " + (
            f"max |diff| {p['max_abs_diff']:.1e} ({'pass' if p['pass'] else 'FAIL'} at {p['atol']:g})" if p
            else "the authors' package is not installed")]
    if "train" in r:
        t = r["train"]
        s = t["shape"]
        lines += ["", f"Training step, GPT-2 shape ({s['layers']} layers, width {s['width']}), {t['batch']} x "
                      f"{t['context']} tokens, {t['precision']}, gradient checkpointing; median of {t['timed_steps']} "
                      f"steps after {t['warmup_steps']} warm-up, {t['rounds']} interleaved rounds (step: median over rounds; "
                      "ratio: median [min, max] of the per-round ratios):",
                  "", "| trainer | step (s) | tokens/s | peak MiB | ratio |", "|---|---:|---:|---:|---:|"]
        for v, sec in t["step_s"].items():
            key = "lmdisp ce / plain" if v == "ce" else f"{v} / ce"
            ratio = "1.000 (reference)" if v == "plain" else (
                f"{show(t['ratio_spread'][key], '{:.3f}')} vs {'plain' if v == 'ce' else 'ce'}")
            peak = t["peak_mib"].get(v)
            name = "transformers.Trainer, ce" if v == "plain" else f"lmdisp, {v}"
            lines.append(f"| {name} | {sec:.4f} | {t['tokens_per_s'][v]:,.0f} | "
                         f"{'' if peak is None else f'{peak:.0f}'} | {ratio} |")
        said = "; ".join(f"{k}: {v}" for k, v in t["targets"].items())
        lines += ["", ("Targets (judged at full sizes on a GPU, not at smoke sizes): " if r["smoke"] else "Targets: ")
                  + said + (" (within noise: the rounds' range straddles the target)" if "noise" in said else "") + "."]
    if "eval" in r:
        e = r["eval"]
        lines += ["", f"Evaluation, `{e['model']}`, {e['examples']} generated multiple-choice examples x 4 answers:",
                  "", "| batch size | seconds | examples/s | acc |", "|---|---:|---:|---:|"]
        for b, times in e["raw_s"].items():
            tag = " (lmdisp default)" if b == str(e["default_batch_size"]) else ""
            sec = statistics.median(times)
            lines.append(f"| {b}{tag} | {sec:.2f} | {e['examples'] / sec:.1f} | {e['acc'][b]:.4f} |")
        lines += ["", "Same accuracy: " + ("yes" if e["same_acc"] else "NO")]
    lines += ["", load_note(r.get("load_average_before"), r.get("load_average_after"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
