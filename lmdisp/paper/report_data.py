"""Tables about the plan itself: per job (command, dependencies, cost, status) and per artefact."""

from __future__ import annotations

from lmdisp.paper.plan import ARTEFACTS, Job, Plan
from lmdisp.paper.state import job_state


def cost_text(job: Job, scale: str) -> str:
    if scale != "full":
        return f"~{job.minutes:g} CPU-min" if job.minutes else "CPU"
    if job.gpu_hours is None:
        return "cost unknown"
    if not job.gpu_hours:
        return job.cost_source
    gpus = f", {job.gpus} GPUs" if job.gpus > 1 else ""
    return f"{job.gpu_hours:g} GPU-h{gpus} ({job.cost_source})"


def plan_rows(plan: Plan, jobs: list[Job]) -> tuple[list[dict], dict[str, tuple[int, float, float]]]:
    """One row per job, and per artefact (jobs, GPU hours at full scale, CPU minutes at this scale).
    A job shared by several artefacts counts in each."""
    from lmdisp.paper.build import build_plan

    full = build_plan("full").jobs if plan.scale != "full" else plan.jobs
    rows, totals = [], {}
    for job in jobs:
        rows.append({"id": job.id, "kind": job.kind, "deps": job.deps, "status": job_state(plan, job).status,
                     "cost": cost_text(job, plan.scale), "command": job.command_line(), "artefacts": job.artefacts})
    for art in ARTEFACTS:
        mine = [j for j in jobs if art in j.artefacts]
        if mine:
            hours = sum(j.gpu_hours or 0 for j in full.values() if art in j.artefacts)
            totals[art] = (len(mine), hours, sum(j.minutes or 0 for j in mine))
    return rows, totals
