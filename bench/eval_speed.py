"""Evaluation throughput: lm-eval at batch size 1 (how the authors evaluated) vs lmdisp's default.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/eval_speed.py                 # SmolLM2-135M, 64 examples
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/eval_speed.py --examples 16 --rounds 1   # quick trial
    python bench/eval_speed.py --model gpt2 --batch-sizes 1,8,32                      # on a GPU: default is auto

One process, one loaded model (`lmdisp.models.load_model`), one generated multiple-choice
task (`--examples` questions of 20-120 words, 4 answers each, written as YAML + JSONL to a
temporary folder), evaluated through `lm_eval.simple_evaluate` exactly as `lmdisp evaluate`
does, once per batch size and round, the order alternating between rounds. Task objects are
built outside the timed region; each batch size keeps its fastest round. The accuracies at
every batch size are compared (batching must not change the scores beyond float noise).

Writes results/bench/eval_speed.json (every raw figure) and results/bench/eval_speed.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "eval_speed")  # also fills the README block
sys.path.insert(0, str(REPO))

from bench.common import device_name, publish  # noqa: E402

WORDS = ("river stone light north garden market winter signal paper engine window silver forest "
         "letter number course motion harbor castle valley island circle bridge shadow").split()


def write_task(folder: Path, examples: int, seed: int = 0) -> str:
    """A multiple-choice task of varied lengths (padding matters when batching)."""
    import yaml

    rng = random.Random(seed)
    rows = []
    for i in range(examples):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        rows.append({"question": context, "choices": choices, "label": i % 4})
    data = folder / "bench_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "bench_mc.yaml").write_text(yaml.safe_dump({
        "task": "bench_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label", "metadata": {"version": 1.0},
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    return "bench_mc"


def main(argv=None) -> int:
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lmdisp.eval.harness import hf_lm, eval_batch_size
    from lmdisp.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,default", help="comma list; `default` = lmdisp's default")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    loaded = load_model(args.model, lm_head=True, device=args.device)
    device = loaded.model.get_input_embeddings().weight.device
    default = eval_batch_size(None, device.type)
    sizes = [default if b == "default" else (b if b == "auto" else int(b)) for b in args.batch_sizes.split(",")]
    times: dict[str, list[float]] = {str(b): [] for b in sizes}
    acc: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        task = write_task(Path(tmp), args.examples)
        tm = TaskManager(include_path=tmp, include_defaults=False)

        def run(batch, limit=None) -> tuple[float, dict]:
            lm = hf_lm(loaded.model, loaded.tokenizer, batch)
            tasks = [tm.load([task])["tasks"][task]]        # fresh task objects, built before the clock starts
            start = time.perf_counter()
            out = simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=tm, log_samples=False,
                                  random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
            return time.perf_counter() - start, out

        for b in sizes:  # warm-up: allocator, kernels, first-call overheads
            run(b, limit=4)
        for r in range(args.rounds):
            for b in (sizes if r % 2 == 0 else sizes[::-1]):
                seconds, out = run(b)
                times[str(b)].append(seconds)
                acc[str(b)] = out["results"][task]["acc,none"]
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    best = {b: min(v) for b, v in times.items()}
    report = {
        "model": args.model, "num_params": loaded.num_params, "device": device_name(device),
        "dtype": str(loaded.model.dtype).replace("torch.", ""), "examples": args.examples, "choices": 4,
        "default_batch_size": default, "rounds": args.rounds, "best_s": best, "raw_s": times,
        "examples_per_s": {b: args.examples / s for b, s in best.items()},
        "speedup_vs_batch_1": {b: best["1"] / s for b, s in best.items()} if "1" in best else None,
        "acc": acc, "same_acc": len(set(acc.values())) == 1,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }
    publish("eval_speed", report, markdown(report), args.output, readme=args.output == DEFAULT_OUTPUT)
    return 0


def markdown(r: dict) -> str:
    lines = [f"lm-eval throughput, `{r['model']}` ({r['num_params'] / 1e6:.0f}M, {r['dtype']}) on {r['device']}: "
             f"{r['examples']} generated multiple-choice examples x {r['choices']} answers, best of {r['rounds']} "
             f"interleaved rounds, {r['date']}.", "",
             "| batch size | time (s) | examples/s | speed-up vs batch 1 | acc |", "|---|---:|---:|---:|---:|"]
    for b, s in r["best_s"].items():
        tag = " (lmdisp default)" if b == str(r["default_batch_size"]) else ""
        speed = f"{r['speedup_vs_batch_1'][b]:.2f}x" if r["speedup_vs_batch_1"] else ""
        lines.append(f"| {b}{tag} | {s:.2f} | {r['examples_per_s'][b]:.1f} | {speed} | {r['acc'][b]:.4f} |")
    lines += ["", "Same accuracy at every batch size: " + ("yes" if r["same_acc"] else "no (float noise in padding)")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
