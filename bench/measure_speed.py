"""Speed and memory of `lmdisp.measure.measure_model` against the authors' package and the
bare forward passes, on SmolLM2-135M (float32, CPU), R repetitions x 512 tokens.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/measure_speed.py              # paper: 100 reps
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/measure_speed.py --repetitions 5   # quick trial
    python bench/measure_speed.py --rounds 3 --readme   # also fill the README block (make bench README=1)
    python bench/measure_speed.py --render              # re-render the saved JSON, measure nothing

Three methods, all on the same texts (builtin corpus, `sample_texts(..., seed=0)`):

- `floor`:   the computation lmdisp does minus its own work: the same model object
             (`load_model`'s `AutoModel`, no LM head, as `measure` loads it without
             `--include-logits`), the same call `model(**batch, output_hidden_states=True)` at
             batch size 1 under `torch.inference_mode`, on pre-tokenised inputs, no metric;
- `lmdisp`:  `measure_model` with the default metrics and batch size 1 (tokenisation included);
- `authors`: `embedding_condensation.measure_embedding_condensation(texts=...)`, no plot.

Each run is a fresh subprocess of this script (`--worker METHOD`): it loads the model (the
cached safetensors copy), does one warm-up forward, resets the peak-RSS counter (writes `5`
to /proc/self/clear_refs), records VmRSS as its baseline, then times the method with
`time.perf_counter`. Extra peak memory = VmHWM - baseline. Runs are interleaved over the
rounds (floor, lmdisp, authors, floor, ...); each round gives each ratio (speed-up, overhead,
memory) from that round's runs, and the block shows the median over rounds with its range and
says "within noise" when the range straddles a target (one round: "not judged"). The load
average before and after is recorded. The lmdisp and authors workers save their mean
matrices so the parent can check they agree.

Writes results/bench/measure_speed.json (every raw figure, machine info) and
results/bench/measure_speed.md (the table printed at the end); the README block only with
`--readme`. Linux only (/proc).
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
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "measure_speed")
METHODS = ("floor", "lmdisp", "authors")  # also the order within a round
MODEL = "smollm2-135m"
MARKER = "BENCH_RESULT "  # prefix of the worker's one JSON line (libraries may print too)
# targets: lmdisp vs the authors' package and vs the bare forward passes
TARGET_SPEEDUP = 2.5        # authors time / lmdisp time, at least
TARGET_OVERHEAD_PCT = 15.0  # lmdisp time over the floor, at most
TARGET_MEMORY_RATIO = 10.0  # authors extra peak / lmdisp extra peak, at least
PARITY_ATOL = 1e-5


# ----------------------------------------------------------------------------- worker

def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so the baseline RSS counts live memory only
    and the extra peak does not depend on what the warm-up happened to leave in malloc's free lists."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figures are just a little noisier
        pass


def run_worker(method: str, repetitions: int, max_length: int, matrices: str | None) -> dict:
    """One method in this (fresh) process; returns its figures."""
    import gc

    import numpy as np
    import torch

    from lmdisp.data import load_corpus, sample_texts
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.measure.run import measure_model, tokenize
    from lmdisp.models import load_model

    if method == "authors":  # import before the baseline: its import-time cost is not the method's
        from embedding_condensation import measure_embedding_condensation

    texts = sample_texts(load_corpus("builtin"), repetitions, seed=0)
    loaded = load_model(MODEL, dtype="float32", device="cpu")
    model = loaded.model
    enc = tokenize(loaded.tokenizer, texts, max_length)
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
        model(**{k: v[:1] for k, v in enc.items()}, output_hidden_states=True)
    if method != "floor":
        del enc  # the floor's inputs are part of its setup; the others tokenise themselves
    gc.collect()
    _malloc_trim()

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline_kib = _proc_status_kib("VmRSS")
    start = time.perf_counter()
    if method == "floor":
        with torch.inference_mode():
            for r in range(repetitions):
                out = model(**{k: v[r:r + 1] for k, v in enc.items()}, output_hidden_states=True)
                del out
        mean = None
    elif method == "lmdisp":
        cfg = MeasureConfig(models=[MODEL], dataset="builtin", repetitions=repetitions,
                            max_length=max_length, batch_size=1)
        mean = measure_model(loaded, texts, cfg).mean_matrices
    elif method == "authors":
        mean = measure_embedding_condensation(
            model, loaded.tokenizer, texts=texts, repetitions=repetitions, max_length=max_length,
            plot=False, save_path=None, show_progress=False).cossim_by_layer  # both falsy: no heatmap
    else:
        raise ValueError(f"unknown method {method!r}")
    wall = time.perf_counter() - start
    peak_kib = _proc_status_kib("VmHWM")

    if matrices and mean is not None:
        np.save(matrices, mean)
    return {
        "method": method, "wall_s": wall, "s_per_rep": wall / repetitions,
        "baseline_rss_mib": baseline_kib / 1024, "peak_rss_mib": peak_kib / 1024,
        "extra_peak_mib": (peak_kib - baseline_kib) / 1024,
        "torch_threads": torch.get_num_threads(), "pid": os.getpid(),
        "matrices_shape": list(mean.shape) if mean is not None else None,
    }


# ----------------------------------------------------------------------------- parent

def spawn(method: str, args, matrices: Path | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
           "--repetitions", str(args.repetitions), "--max-length", str(args.max_length)]
    if matrices:
        cmd += ["--matrices", str(matrices)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode or not lines:
        sys.exit(f"worker `{method}` failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARKER):])


def machine_info() -> dict:
    import torch

    from bench.common import cpu_model

    return {
        "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per method: median wall time over rounds (and its range), largest extra peak memory."""
    import statistics

    out = {}
    for method in METHODS:
        walls = [r["wall_s"] for r in runs if r["method"] == method]
        reps = runs[0]["wall_s"] / runs[0]["s_per_rep"]
        out[method] = {"wall_s": statistics.median(walls), "wall_min_s": min(walls), "wall_max_s": max(walls),
                       "s_per_rep": statistics.median(walls) / reps, "runs": len(walls),
                       "extra_peak_mib": max(r["extra_peak_mib"] for r in runs if r["method"] == method)}
    return out


def targets(runs: list[dict]) -> dict[str, dict]:
    """Each ratio per round (that round's runs), its spread over rounds and the verdict."""
    from bench.common import spread, verdict

    rounds = sorted({r.get("round", 0) for r in runs})
    by = {(r.get("round", 0), r["method"]): r for r in runs}
    t = lambda k, m: by[(k, m)]["wall_s"]  # noqa: E731
    mem = lambda k, m: by[(k, m)]["extra_peak_mib"]  # noqa: E731
    values = {
        "speedup_vs_authors": [t(k, "authors") / t(k, "lmdisp") for k in rounds],
        "overhead_vs_floor_pct": [100.0 * (t(k, "lmdisp") - t(k, "floor")) / t(k, "floor") for k in rounds],
        "memory_ratio_authors_over_lmdisp": [mem(k, "authors") / max(mem(k, "lmdisp"), 1e-9) for k in rounds],
        "ceiling_vs_authors": [t(k, "authors") / t(k, "floor") for k in rounds],
    }
    goals = {"speedup_vs_authors": (TARGET_SPEEDUP, False, f">= {TARGET_SPEEDUP}x"),
             "overhead_vs_floor_pct": (TARGET_OVERHEAD_PCT, True, f"<= {TARGET_OVERHEAD_PCT:g}%"),
             "memory_ratio_authors_over_lmdisp": (TARGET_MEMORY_RATIO, False, f">= {TARGET_MEMORY_RATIO:g}x")}
    out = {}
    for key, vals in values.items():
        s = spread(vals)
        out[key] = {"spread": s, "value": s["median"], "per_round": vals}
        if key in goals:
            target, at_most, text = goals[key]
            out[key].update(target=text, verdict=verdict(s, target, at_most=at_most))
    if out["ceiling_vs_authors"]["spread"]["max"] < TARGET_SPEEDUP:  # out of reach even at zero overhead
        out["speedup_vs_authors"]["verdict"] = "missed"
    return out


def _why(tg: dict) -> list[str]:
    """Plain words next to a target that was missed or sits within noise."""
    from bench.common import show

    out = []
    speed, ceiling = tg["speedup_vs_authors"], tg["ceiling_vs_authors"]
    if speed["verdict"] != "met":
        reach = ("so no method can reach the target here" if ceiling["spread"]["max"] < TARGET_SPEEDUP
                 else "the gap to that ceiling is lmdisp's own work")
        out.append(f"Speed-up vs the authors' package {speed['verdict']}: on this CPU the forward passes alone "
                   f"(the floor) take {show(ceiling['spread'], '1/{:.2f}')} of the authors' time, a ceiling of "
                   f"{show(ceiling['spread'])} for any method that runs them, {reach}.")
    over = tg["overhead_vs_floor_pct"]
    if over["spread"]["min"] < 0:
        out.append("Overhead below 0%: lmdisp runs the floor's forward passes plus tokenisation and accumulation, "
                   "so a negative value is timing noise between runs, not lmdisp being faster.")
    return out


def markdown(report: dict) -> str:
    from bench.common import load_note, show

    best, tg, cfg, machine = report["best"], report["targets"], report["config"], report["machine"]
    lines = [f"Embedding-condensation measurement, {MODEL} float32 CPU, {cfg['repetitions']} repetitions x "
             f"{cfg['max_length']} tokens, {cfg['rounds']} interleaved round(s); {machine['cpu_model']}, "
             f"{machine['cpu_cores']} cores, torch {machine['torch']}, {machine['date']}.",
             "",
             "| method | wall s, median [min, max] | s/rep | extra peak MiB |",
             "|---|---:|---:|---:|"]
    for m in METHODS:
        b = best[m]
        wall = show({"n": b["runs"], "median": b["wall_s"], "min": b.get("wall_min_s", b["wall_s"]),
                     "max": b.get("wall_max_s", b["wall_s"])}, "{:.2f}")
        lines.append(f"| {m} | {wall} | {b['s_per_rep']:.3f} | {b['extra_peak_mib']:.1f} |")
    lines += ["", "| target | median [min, max] over rounds | goal | verdict |", "|---|---:|---:|---|"]
    labels = {"speedup_vs_authors": ("lmdisp speed-up vs authors", "{:.2f}x"),
              "overhead_vs_floor_pct": ("lmdisp overhead vs floor", "{:+.1f}%"),
              "memory_ratio_authors_over_lmdisp": ("extra peak memory, authors / lmdisp", "{:.1f}x")}
    for key, (label, fmt) in labels.items():
        t = tg[key]
        lines.append(f"| {label} | {show(t['spread'], fmt)} | {t['target']} | {t['verdict']} |")
    p = report["parity"]
    lines += ["", *_why(tg),
              f"lmdisp vs authors mean matrices: max |diff| = {p['max_abs_diff']:.2e} "
              f"({'pass' if p['pass'] else 'FAIL'} at atol {PARITY_ATOL:g}).",
              load_note(machine.get("load_average_before"), machine.get("load_average_after")),
              "Floor: the same model object and forward call as lmdisp (no LM head), without tokenisation or "
              "metrics. Extra peak: VmHWM - VmRSS after warm-up, largest run."]
    return "\n".join(lines) + "\n"


def parse(argv):
    from bench.common import readme_flag

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repetitions", type=int, default=100, help="texts per method (paper: 100)")
    ap.add_argument("--max-length", type=int, default=512, help="tokens per text (paper: 512)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ratios are reported over them")
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="path stem of the .json and .md written")
    ap.add_argument("--render", action="store_true", help="re-render the saved <output>.json, measure nothing")
    readme_flag(ap)
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--matrices", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repetitions < 1 or args.max_length < 2 or args.rounds < 1:
        ap.error("--repetitions and --rounds must be >= 1, --max-length >= 2")
    return args


def main(argv=None) -> int:
    from bench.common import publish, rendered

    args = parse(argv)
    if args.worker:
        result = run_worker(args.worker, args.repetitions, args.max_length, args.matrices)
        print(MARKER + json.dumps(result), flush=True)
        return 0
    report = rendered(args.output) if args.render else measure(args)
    report["best"], report["targets"] = summarize(report["runs"]), targets(report["runs"])
    publish("measure", report, markdown(report), args.output, readme=args.readme)
    return 0


def measure(args) -> dict:
    import numpy as np

    from bench.common import load_average

    runs: list[dict] = []
    diffs: list[float] = []
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="lmdisp-bench-") as tmp:
        for rnd in range(args.rounds):
            saved = {}
            for method in METHODS:
                path = Path(tmp) / f"{method}-{rnd}.npy" if method != "floor" else None
                print(f"round {rnd + 1}/{args.rounds}: {method} ...", file=sys.stderr, flush=True)
                run = spawn(method, args, path)
                run["round"] = rnd
                runs.append(run)
                print(f"  {run['wall_s']:.2f} s, extra peak {run['extra_peak_mib']:.1f} MiB",
                      file=sys.stderr, flush=True)
                if path:
                    saved[method] = np.load(path)
            ours, theirs = saved["lmdisp"], saved["authors"]
            if ours.shape != theirs.shape:
                sys.exit(f"shape mismatch: lmdisp {ours.shape} vs authors {theirs.shape}")
            diffs.append(float(np.abs(ours - theirs).max()))
    machine = {**machine_info(), "load_average_before": before, "load_average_after": load_average()}
    return {
        "config": {"model": MODEL, "dtype": "float32", "device": "cpu", "corpus": "builtin", "seed": 0,
                   "repetitions": args.repetitions, "max_length": args.max_length, "rounds": args.rounds,
                   "batch_size_lmdisp": 1, "order": list(METHODS)},
        "machine": machine,
        "runs": runs,
        "parity": {"max_abs_diff": max(diffs), "per_round": diffs, "atol": PARITY_ATOL,
                   "pass": max(diffs) <= PARITY_ATOL},
    }


if __name__ == "__main__":
    if str(REPO) not in sys.path:  # run as a script from anywhere: import the checkout's lmdisp
        sys.path.insert(0, str(REPO))
    sys.exit(main())
