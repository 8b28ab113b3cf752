"""Which jobs of a plan are done, and what to do with a job's folder before it runs.

Markers live outside the job's folder (the commands want a new or empty `--output`), in
`<root>/.jobs/<job id>.started.json` and `.done.json`:

- complete: the done marker holds the job's hash -> skip;
- stopped training run of the same hash (started marker, no done marker) -> resume
  it in place (`lmdisp midtrain ... --resume` continues from its last complete checkpoint);
- anything else in the folder (a changed config, a stopped measure/evaluate/report, a folder
  from elsewhere) -> moved aside to `<out>.old-<hash>-<n>`, never mixed with the new output.

Markers are written atomically, the done marker last, so `kill -9` at any moment leaves a job
either complete or to be (re)run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lmdisp.paper.plan import Job, Plan, job_hash
from lmdisp.runs import write_json

DONE, STARTED = "done", "started"


@dataclass
class JobState:
    job: Job
    hash: str
    status: str  # done | resume | aside | new
    note: str = ""


def marker(plan: Plan, job: Job, name: str) -> Path:
    return plan.root / ".jobs" / f"{job.id}.{name}.json"


def read_marker(plan: Plan, job: Job, name: str) -> dict | None:
    try:
        return json.loads(marker(plan, job, name).read_text())
    except (OSError, ValueError):
        return None


def job_state(plan: Plan, job: Job) -> JobState:
    out, digest = plan.output(job), job_hash(job, plan)
    done = read_marker(plan, job, DONE)
    if done and done.get("hash") == digest and out.is_dir():
        return JobState(job, digest, "done")
    started = read_marker(plan, job, STARTED)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return JobState(job, digest, "new")
    if not done and started and started.get("hash") == digest and job.resumable:
        return JobState(job, digest, "resume", "stopped training run: resumed from its last checkpoint")
    old = (done or started or {}).get("hash", "unknown")
    why = "config changed" if old not in ("unknown", digest) else "stopped before it finished"
    return JobState(job, digest, "aside", f"{why}: old output kept at {aside_name(out, old).name}")


def aside_name(out: Path, old_hash: str) -> Path:
    for n in range(1, 1000):
        candidate = out.with_name(f"{out.name}.old-{old_hash[:8]}-{n}")
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"too many old copies of {out}")


def prepare_folder(plan: Plan, state: JobState) -> None:
    """Before a job runs: move old output aside, then record that this hash started here."""
    job, out = state.job, plan.output(state.job)
    old = read_marker(plan, job, DONE) or read_marker(plan, job, STARTED) or {}
    if state.status == "aside":
        target = aside_name(out, old.get("hash", "unknown"))
        out.rename(target)
        if old:
            write_json(target / ".paper-job.json", old)  # what the old output was made by
    if state.status != "resume":
        marker(plan, job, DONE).unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker(plan, job, STARTED), {"job": job.id, "hash": state.hash, "started": time.time(),
                                            "command": job.command_line()})


def mark_done(plan: Plan, state: JobState, wall_s: float, provenance: dict) -> None:
    write_json(marker(plan, state.job, DONE), {"job": state.job.id, "hash": state.hash, "wall_time_s": round(wall_s, 2),
                            "command": state.job.command_line(), "finished": time.time(), **provenance})


def plan_status(plan: Plan, jobs: list[Job]) -> list[JobState]:
    return [job_state(plan, j) for j in jobs]
