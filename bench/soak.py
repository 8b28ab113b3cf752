"""Long runs stay flat: resident memory and open file handles over a long training run and a
long measurement, in one process.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/soak.py            # 2000 steps, 1000 repetitions
    python bench/soak.py --steps 300 --repetitions 100 --output /tmp/soak   # a quicker trial

Training: `run_train` on a tiny random GPT-2 (builtin corpus, context 32, batch 4), `--steps`
optimiser steps with a condensation snapshot and held-out loss every 50 steps, a checkpoint
every 250 (the last 2 kept) and a log line every 10. Measurement: `run_measure` of the same
architecture with `--repetitions` repetitions of 64 tokens. Every 10 steps (every 10
repetitions) the process's resident memory (VmRSS) and open file descriptors
(/proc/self/fd) are sampled. Growth is the mean of the last 10% of samples over the mean of
the 10% right after warm-up (the first 20% of the run), minus one. Target (issue 19): under
5% for both, in both phases. The load average is recorded: other processes share the cores.

Writes results/bench/soak.json and results/bench/soak.md (and the README block `soak`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "soak")  # also fills the README block
sys.path.insert(0, str(REPO))

from bench.common import device_name, publish  # noqa: E402

WARMUP, WINDOW, TARGET = 0.2, 0.1, 0.05


def sample() -> dict:
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"rss_mib": rss / 1024, "fds": len(os.listdir("/proc/self/fd")), "time": time.time()}


def growth(samples: list[dict], key: str) -> dict:
    n = len(samples)
    start, width = int(n * WARMUP), max(1, int(n * WINDOW))
    base = sum(s[key] for s in samples[start:start + width]) / width
    end = sum(s[key] for s in samples[-width:]) / width
    return {"after_warmup": round(base, 2), "end": round(end, 2), "max": round(max(s[key] for s in samples), 2),
            "growth": round(end / base - 1, 4), "pass": end / base - 1 < TARGET}


def soak_training(steps: int, folder: Path) -> dict:
    from transformers import TrainerCallback

    from lmdisp.train import TrainConfig, run_train

    samples: list[dict] = []

    class Sampler(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % 10 == 0:
                samples.append({"step": state.global_step, **sample()})

    cfg = TrainConfig(model="random:tiny-gpt2", dataset="builtin", loss="dispersion", context_length=32, batch_size=4,
                      grad_accum=1, train_tokens=steps * 128, lr=1e-3, gradient_checkpointing=False,
                      condensation_every=50, logging_steps=10, save_steps=250, save_total_limit=2,
                      output=str(folder / "train"), cache_dir=str(folder / "tokens"))
    started = time.perf_counter()
    run = run_train(cfg, callbacks=[Sampler()])
    snapshots = sum(1 for _ in open(run.path / "condensation.csv")) - 1
    return {"steps": run.steps, "seconds": round(time.perf_counter() - started, 1), "samples": samples,
            "condensation_rows": snapshots, "checkpoints_kept": len(list((run.path / "checkpoints").iterdir())),
            "rss": growth(samples, "rss_mib"), "fds": growth(samples, "fds")}


def soak_measure(repetitions: int, folder: Path) -> dict:
    from lmdisp.measure import MeasureConfig, run_measure

    samples: list[dict] = []

    def progress(spec, done, total):
        if done % 10 == 0 and (not samples or samples[-1]["repetition"] != done):
            samples.append({"repetition": done, **sample()})

    cfg = MeasureConfig(models=["random:tiny-gpt2"], dataset="builtin", repetitions=repetitions, max_length=64,
                        plots=False, output=str(folder / "measure"))
    started = time.perf_counter()
    run_measure(cfg, progress=progress)
    return {"repetitions": repetitions, "seconds": round(time.perf_counter() - started, 1), "samples": samples,
            "rss": growth(samples, "rss_mib"), "fds": growth(samples, "fds")}


def markdown(report: dict) -> str:
    t, m = report["training"], report["measure"]
    rows = [("training", f"{t['steps']} steps", t), ("measure", f"{m['repetitions']} repetitions", m)]
    lines = [f"Soak, one process, {report['device']}, {report['date']} (`make bench-soak`; load average (1 min) "
             f"on the {os.cpu_count()} cores: {report['load_before']:.2f} before, {report['load_after']:.2f} after).",
             "",
             "| phase | length | s | RSS MiB after warm-up | RSS MiB at end | RSS growth | open files after warm-up "
             "| at end | growth | < 5% |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, length, r in rows:
        ok = "pass" if r["rss"]["pass"] and r["fds"]["pass"] else "FAIL"
        lines.append(f"| {name} | {length} | {r['seconds']:.0f} | {r['rss']['after_warmup']:.1f} | "
                     f"{r['rss']['end']:.1f} | {r['rss']['growth']:+.1%} | {r['fds']['after_warmup']:.0f} | "
                     f"{r['fds']['end']:.0f} | {r['fds']['growth']:+.1%} | {ok} |")
    lines += ["", f"Training: a condensation snapshot and held-out loss every 50 steps ({t['condensation_rows']} "
              f"rows in condensation.csv), a checkpoint every 250 steps ({t['checkpoints_kept']} kept), a log line "
              "every 10; samples every 10 steps (repetitions). Growth: mean of the last 10% of samples over the "
              "mean of the 10% after the first 20% (warm-up)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repetitions", type=int, default=1000)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lmdisp-soak-") as tmp:
        training = soak_training(args.steps, Path(tmp))
        measure = soak_measure(args.repetitions, Path(tmp))
    report = {"device": device_name(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "load_before": load_before, "load_after": os.getloadavg()[0], "target_growth": TARGET,
              "training": training, "measure": measure}
    publish("soak", report, markdown(report), args.output, readme=args.output == DEFAULT_OUTPUT)


if __name__ == "__main__":
    main()
