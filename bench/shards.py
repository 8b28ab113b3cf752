"""Time to the first training step with token shards, and what the cache holds.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/shards.py              # 200 MB and 20 MB corpora
    python bench/shards.py --megabytes 50 --small-megabytes 5                    # a quicker trial

Generates a local jsonl corpus of `--megabytes` (random English-like words, one record of
50-400 words per line) and one of `--small-megabytes`, then runs the real command
(`python -m lmdisp midtrain`, a tiny random GPT-2, `--train-tokens 20k`, context 128) on
each with an empty shard cache, and a second time on the large corpus with another seed and
loss. For each run: seconds from process start to the first logged step (`metrics.jsonl`
gains its first line; the run is then stopped), whether a shard build happened, how long it
took and how many records it read, and the cache's bytes per token kept (whole folder).
Then the rate of a build of the whole small corpus, in one process (the fast tokenizer's own
threads) and with a pool of `--num-proc` processes. Targets (issue 9): first step within 30 s
on the 200 MB corpus, <= 4 bytes per token kept, time to first step not growing with the
corpus (large vs small), nothing built by the second run.

Writes results/bench/shards.json and results/bench/shards.md (and the README block with `--readme`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "shards")
sys.path.insert(0, str(REPO))

from bench.common import device_name, publish, readme_flag  # noqa: E402


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """A jsonl file of about `megabytes` MB; returns the number of records."""
    import numpy as np

    rng = np.random.default_rng(seed)
    syllables = ["ta", "ri", "no", "ve", "la", "ko", "mi", "su", "de", "an", "per", "con", "ist", "ment"]
    words = np.array(["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(5000)])
    target, written, records = int(megabytes * 1e6), 0, 0
    with open(path, "w") as fh:
        while written < target:
            lengths = rng.integers(50, 400, size=1000)
            picks = words[rng.integers(0, len(words), size=int(lengths.sum()))]
            starts = np.concatenate([[0], np.cumsum(lengths)])
            chunk = "".join(json.dumps({"text": " ".join(picks[a:b]) + "."}) + "\n"
                            for a, b in zip(starts[:-1], starts[1:]))
            fh.write(chunk)
            written += len(chunk)
            records += len(lengths)
    return records


def run_once(corpus: Path, out: Path, cache: Path, seed: int, loss: str, tokens: str) -> dict:
    cmd = [sys.executable, "-m", "lmdisp", "midtrain", "--model", "random:tiny-gpt2", "--dataset", str(corpus),
           "--train-tokens", tokens, "--context-length", "128", "--batch-size", "4", "--grad-accum", "1",
           "--no-gradient-checkpointing", "--condensation-every", "0", "--logging-steps", "1", "--seed", str(seed),
           "--loss", loss, "--set", f"cache_dir={cache}", "--output", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    builds_before = {p: p.stat().st_mtime_ns for p in cache.glob("*/blocks-*")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics, first = out / "metrics.jsonl", None
    while proc.poll() is None and first is None:
        if metrics.is_file() and metrics.stat().st_size > 0:
            first = time.perf_counter() - start
        time.sleep(0.02)
    if first is None:
        raise SystemExit(f"midtrain failed: {proc.stderr.read()[-2000:]}")
    proc.kill()  # the first step is what is timed; the rest of the run is ordinary training
    proc.wait()
    builds = {p: p.stat().st_mtime_ns for p in cache.glob("*/blocks-*")}
    (folder,) = builds
    built = builds_before.get(folder) != builds[folder]
    index = json.loads((folder / "index.json").read_text())
    kept = index["n_blocks"] * index["context_length"]
    folder_bytes = sum(p.stat().st_size for p in folder.parent.rglob("*") if p.is_file())
    return {"seed": seed, "loss": loss, "first_step_s": round(first, 2), "built": built,
            "build_s": index["build_seconds"] if built else 0.0, "tokens_kept": kept,
            "records_read": index["records_read"], "dtype": index["dtype"],
            "token_file_bytes_per_token": (folder / "tokens.bin").stat().st_size / kept,
            "cache_bytes_per_token": folder_bytes / kept}


def build_rate(corpus: Path, cache: Path, num_proc: int | None) -> dict:
    """Tokens per second of a build of the whole corpus (in this process, or a pool)."""
    from lmdisp.models import load_tokenizer
    from lmdisp.train.shards import prepare_shards, resolve_source

    start = time.perf_counter()
    shards = prepare_shards(resolve_source(str(corpus)), load_tokenizer("smollm2-135m"), 128, 10**12,
                            cache_dir=cache, num_proc=num_proc)
    seconds = time.perf_counter() - start
    return {"num_proc": num_proc or 1, "tokens": shards.index["tokens_read"], "seconds": round(seconds, 2),
            "tokens_per_s": shards.index["tokens_read"] / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--megabytes", type=float, default=200)
    ap.add_argument("--small-megabytes", type=float, default=20)
    ap.add_argument("--train-tokens", default="20k")
    ap.add_argument("--num-proc", type=int, default=max(2, os.cpu_count() or 1),
                    help="tokenizer processes for the whole-corpus build rate")
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    readme_flag(ap)
    args = ap.parse_args(argv)
    runs = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = {}
        for name, mb in (("large", args.megabytes), ("small", args.small_megabytes)):
            corpus = tmp / f"{name}.jsonl"
            records = write_corpus(corpus, mb)
            sizes[name] = {"megabytes": round(corpus.stat().st_size / 1e6, 1), "records": records}
        for name, corpus, seed, loss in (("large", "large", 1, "ce"), ("small", "small", 1, "ce"),
                                         ("large, again: another seed and loss", "large", 2, "dispersion")):
            cache = tmp / f"cache-{corpus}"
            cache.mkdir(exist_ok=True)
            runs[name] = {**run_once(tmp / f"{corpus}.jsonl", tmp / f"run-{len(runs)}", cache, seed, loss,
                                     args.train_tokens), "corpus": corpus, **sizes[corpus]}
            print(f"{name}: {runs[name]}", file=sys.stderr)
        rates = [build_rate(tmp / "small.jsonl", tmp / f"rate-{n}", n) for n in (None, args.num_proc)]
    large, small, again = runs.values()
    report = {
        "device": device_name("cpu"), "train_tokens": args.train_tokens, "context_length": 128,
        "model": "random:tiny-gpt2", "runs": runs, "build_rates": rates, "cpu_cores": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after (1 min)
        "targets": {"first_step_within_30s": large["first_step_s"] <= 30,
                    "at_most_4_bytes_per_token": large["cache_bytes_per_token"] <= 4,
                    # what depends on the corpus is the shard build: same records read, same time
                    "first_step_does_not_grow_with_corpus": large["records_read"] == small["records_read"]
                    and large["build_s"] <= 2 * small["build_s"] + 1.0,
                    "second_run_builds_nothing": not again["built"]},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
    }
    publish("shards", report, markdown(report), args.output, readme=args.readme)
    return 0


def markdown(r: dict) -> str:
    lines = [f"`lmdisp midtrain` on a generated local jsonl, `--train-tokens {r['train_tokens']}`, context "
             f"{r['context_length']}, `{r['model']}`, on {r['device']}; {r['date']}.", "",
             "| run | corpus | seconds to first step | shards built | build (s) | records read | "
             "cache bytes / token kept |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, x in r["runs"].items():
        lines.append(f"| {name} (seed {x['seed']}, {x['loss']}) | {x['megabytes']:.0f} MB, {x['records']:,} records | "
                     f"{x['first_step_s']:.1f} | {'yes' if x['built'] else 'no'} | "
                     f"{x['build_s']:.2f} | {x['records_read']:,} | {x['cache_bytes_per_token']:.2f} "
                     f"({x['dtype']}) |")
    lines += ["", "Building the whole small corpus (SmolLM2 tokenizer, context 128): " + "; ".join(
        f"{x['num_proc']} process{'es' if x['num_proc'] > 1 else ''}: {x['tokens_per_s']:,.0f} tokens/s "
        f"({x['tokens']:,} tokens in {x['seconds']:.1f} s)" for x in r["build_rates"]) + "."]
    t = r["targets"]
    lines += ["", "Seconds to the first step include starting Python, loading the model and the Trainer's set-up; "
              "the shard build is the only part that depends on the corpus. Load average (1 min) on the "
              f"{r['cpu_cores']} cores: {r['load_average'][0]} before, {r['load_average'][1]} after.", "", "Targets: first step within 30 s " + ("yes" if t["first_step_within_30s"] else "NO") +
              "; <= 4 bytes per token kept " + ("yes" if t["at_most_4_bytes_per_token"] else "NO") +
              "; time to first step independent of corpus size " +
              ("yes" if t["first_step_does_not_grow_with_corpus"] else "NO") +
              "; second run builds nothing " + ("yes" if t["second_run_builds_nothing"] else "NO") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
