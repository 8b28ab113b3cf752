"""Evaluation throughput: lm-eval at batch size 1 (how the authors evaluated) vs lmdisp's default.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/eval_speed.py                 # SmolLM2-135M, 64 examples
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/eval_speed.py --examples 16 --rounds 1   # quick trial
    python bench/eval_speed.py --model gpt2 --batch-sizes 1,8,32                      # on a GPU: default is auto

One process, one loaded model (`lmdisp.models.load_model`), one generated multiple-choice
task (`--examples` questions of 20-120 words, 4 answers each, written as YAML + JSONL to a
temporary folder), evaluated through `lm_eval.simple_evaluate` exactly as `lmdisp evaluate`
does, once per batch size and round, the order alternating between rounds. Task objects are
built outside the timed region. Each round gives each batch size's speed-up over batch 1
(same round); the block shows the median over rounds and its range, and the load average. The
accuracies at every batch size are compared (batching must not change the scores beyond float
noise).

Writes results/bench/eval_speed.json (every raw figure) and results/bench/eval_speed.md; the
README block only with `--readme` (`make bench-eval README=1`); `--render` re-renders the JSON.
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
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "eval_speed")
sys.path.insert(0, str(REPO))

from bench.common import device_name, load_average, load_note, publish, readme_flag, rendered, show, spread  # noqa: E402,E501

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


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,default", help="comma list; `default` = lmdisp's default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    ap.add_argument("--render", action="store_true", help="re-render the saved <output>.json, measure nothing")
    readme_flag(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    report = rendered(args.output) if args.render else measure(args)
    publish("eval_speed", report, markdown(report), args.output, readme=args.readme)
    return 0


def measure(args) -> dict:
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lmdisp.eval.harness import hf_lm, eval_batch_size
    from lmdisp.models import load_model

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    loaded = load_model(args.model, lm_head=True, device=args.device)
    device = loaded.model.get_input_embeddings().weight.device
    default = eval_batch_size(None, device.type)
    sizes = [default if b == "default" else (b if b == "auto" else int(b)) for b in args.batch_sizes.split(",")]
    times: dict[str, list[float]] = {str(b): [] for b in sizes}
    acc: dict[str, float] = {}
    before = load_average()
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
    return {
        "model": args.model, "num_params": loaded.num_params, "device": device_name(device),
        "dtype": str(loaded.model.dtype).replace("torch.", ""), "examples": args.examples, "choices": 4,
        "default_batch_size": default, "rounds": args.rounds, "raw_s": times, "acc": acc,
        "same_acc": len(set(acc.values())) == 1, "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": before, "load_average_after": load_average(),
    }


def markdown(r: dict) -> str:
    import statistics

    raw = r["raw_s"]
    lines = [f"lm-eval throughput, `{r['model']}` ({r['num_params'] / 1e6:.0f}M, {r['dtype']}) on {r['device']}: "
             f"{r['examples']} generated multiple-choice examples x {r['choices']} answers, {r['rounds']} "
             f"interleaved rounds, {r['date']}.", "",
             "| batch size | median time (s) | examples/s | speed-up vs batch 1, median [min, max] over rounds | acc |",
             "|---|---:|---:|---:|---:|"]
    for b, times in raw.items():
        tag = " (lmdisp default)" if b == str(r["default_batch_size"]) else ""
        med = statistics.median(times)
        speed = show(spread([one / t for one, t in zip(raw["1"], times)])) if "1" in raw else ""
        lines.append(f"| {b}{tag} | {med:.2f} | {r['examples'] / med:.1f} | {speed} | {r['acc'][b]:.4f} |")
    lines += ["", "Same accuracy at every batch size: " + ("yes" if r["same_acc"] else "no (float noise in padding)"),
              load_note(r.get("load_average_before"), r.get("load_average_after"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
