"""The mini-scale paper plan on this machine: wall time per job and in all, with the machine and
its load (other processes share the CPUs), from the done markers `lmdisp paper --scale mini`
wrote. Writes results/bench/paper_mini.{json,md} (and the README block `paper_mini` with --readme).

    python bench/paper_mini.py                 # read results/paper/mini (run the plan first)
    python bench/paper_mini.py --run           # run `lmdisp paper --scale mini` first
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, publish, readme_flag  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/paper/mini")
    ap.add_argument("--run", action="store_true", help="run the plan first")
    ap.add_argument("--output", default="results/bench/paper_mini")
    readme_flag(ap)
    args = ap.parse_args()
    load_before = os.getloadavg()
    if args.run:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "lmdisp", "paper", "--scale", "mini", "--output", args.root],
                       check=False)
        print(f"plan: {time.time() - t0:.0f} s")
    from lmdisp.paper import build_plan
    from lmdisp.paper.state import DONE, read_marker

    plan = build_plan("mini", args.root)
    rows = []
    for job in plan.order():
        done = read_marker(plan, job, DONE) or {}
        load = (done.get("machine") or {}).get("load_average")
        rows.append({"job": job.id, "kind": job.kind, "wall_s": done.get("wall_time_s"),
                     "load_1min": load[0] if load else None, "finished": done.get("finished")})
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    ends = [r["finished"] for r in rows if r["finished"]]
    report = {"machine": f"{cpu_model()} ({os.cpu_count()} cores)", "jobs": rows, "complete": len(walls),
              "total": len(rows), "sum_wall_s": sum(walls), "load_average_at_start": list(load_before),
              "mean_load_1min_at_job_end": sum(r["load_1min"] for r in rows if r["load_1min"]) / max(
                  1, sum(1 for r in rows if r["load_1min"])),
              "first_to_last_s": (max(ends) - min(ends)) if ends else None}
    by_kind: dict[str, float] = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + (r["wall_s"] or 0.0)
    md = [f"`lmdisp paper --scale mini` on {report['machine']}: {report['complete']} of {report['total']} jobs "
          f"complete, {report['sum_wall_s'] / 60:.1f} min of job wall time in all; mean 1-minute load average "
          f"{report['mean_load_1min_at_job_end']:.1f} (other processes shared the CPUs).", "",
          "| kind | jobs | minutes |", "|---|---|---|"]
    md += [f"| {k} | {sum(1 for r in rows if r['kind'] == k)} | {v / 60:.1f} |" for k, v in by_kind.items()]
    publish("paper_mini", report, "\n".join(md) + "\n", args.output, readme=args.readme)


if __name__ == "__main__":
    main()
