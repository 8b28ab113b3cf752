"""Executors beyond one CPU: jobs packed onto a node's GPUs, and Slurm through `submitit`.

GPU packing: a job that wants g GPUs starts as soon as its dependencies are complete and g of
the visible GPUs are free (CUDA_VISIBLE_DEVICES set to those; training on several through
torchrun); CPU-only jobs (figures, reports) run alongside.

Slurm: one Slurm job per plan job, the plan's dependencies as `--dependency=afterok:...`, the
resources from options (partition, account, time, GPUs per job: the job's own count, or
`--gpus-per-job`). Each Slurm job calls `run_job` on the node, so a resubmitted plan skips what
is complete. submitit's local executor runs the same path in local subprocesses (no
dependency support there: a job is submitted once its dependencies have finished).
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from lmdisp.errors import ConfigError
from lmdisp.paper.execute import Event, Outcome, _one_line, run_job
from lmdisp.paper.plan import Job, Plan
from lmdisp.paper.state import job_state


def visible_gpus() -> list[str]:
    import os

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def run_packed(plan: Plan, jobs: list[Job], gpus: list[str], on_event: Event | None = None) -> Outcome:
    """Run `jobs` concurrently on `gpus`, each job in a subprocess; dependencies first."""
    outcome, free = Outcome(), list(gpus)
    pending = {j.id: j for j in jobs}
    finished: set[str] = {j.id for j in jobs if job_state(plan, j).status == "done"}
    bad: set[str] = set()
    running: dict[Future, tuple[Job, list[str]]] = {}
    with ThreadPoolExecutor(max_workers=max(len(gpus), 1) + 2) as pool:
        while pending or running:
            for jid in [j for j in pending if any(d in bad for d in pending[j].deps)]:
                bad.add(jid)
                outcome.blocked.append(jid)
                del pending[jid]
            for jid, job in list(pending.items()):
                want = min(job.gpus, len(gpus))
                if all(d in finished for d in job.deps) and len(free) >= want:
                    mine = [free.pop(0) for _ in range(want)]
                    running[pool.submit(run_job, plan, job, on_event, None, mine or None)] = (job, mine)
                    del pending[jid]
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                job, mine = running.pop(fut)
                free.extend(mine)
                try:
                    wall = fut.result()
                except Exception as exc:  # noqa: BLE001
                    bad.add(job.id)
                    outcome.failed[job.id] = _one_line(exc)
                    if on_event:
                        on_event("fail", job, outcome.failed[job.id])
                    continue
                finished.add(job.id)
                (outcome.skipped if wall is None else outcome.done).append(job.id)
                if wall is not None:
                    outcome.wall_s[job.id] = wall
    return outcome


@dataclass
class _Named:
    id: str


@dataclass
class SlurmOptions:
    cluster: str = "slurm"          # slurm | local (submitit's local executor) | debug
    partition: str | None = None
    account: str | None = None
    time_min: int = 720
    gpus_per_job: int | None = None  # None: each job's own count
    cpus_per_task: int = 8
    mem_gb: int | None = None
    folder: str | None = None        # submitit's logs; default <root>/.submitit

    @classmethod
    def from_file(cls, path: str | Path | None, **overrides) -> "SlurmOptions":
        from lmdisp.config import read_yaml

        values = dict(read_yaml(path)) if path else {}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"--slurm-config {path}: unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(cls.__dataclass_fields__)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'lmdisp[slurm]' (make install does)") \
            from None
    return submitit


def _executor(plan: Plan, opts: SlurmOptions, job: Job):
    submitit = _submitit()
    folder = Path(opts.folder or plan.root / ".submitit")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=None if opts.cluster == "slurm" else opts.cluster)
    gpus = job.gpus if opts.gpus_per_job is None else (opts.gpus_per_job if job.gpus else 0)
    params = {"timeout_min": opts.time_min, "name": f"lmdisp-{job.id}", "cpus_per_task": opts.cpus_per_task}
    if opts.cluster == "slurm":
        params.update(slurm_partition=opts.partition, slurm_account=opts.account, gpus_per_node=gpus or None,
                      mem_gb=opts.mem_gb)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit(plan: Plan, jobs: list[Job], opts: SlurmOptions, on_event: Event | None = None,
           wait_all: bool = True) -> Outcome:
    """One submitit job per incomplete plan job. On Slurm: all submitted at once with afterok
    dependencies. Locally: submitted once their dependencies have finished."""
    outcome, handles, bad = Outcome(), {}, set()
    todo = [j for j in jobs if job_state(plan, j).status != "done"]
    outcome.skipped = [j.id for j in jobs if j not in todo]
    for job in todo:
        if any(d in bad for d in job.deps):
            bad.add(job.id)
            outcome.blocked.append(job.id)
            continue
        ex = _executor(plan, opts, job)
        deps = [handles[d] for d in job.deps if d in handles]
        if opts.cluster == "slurm" and deps:
            ex.update_parameters(slurm_additional_parameters={
                "dependency": "afterok:" + ":".join(str(h.job_id) for h in deps)})
        elif deps:
            for dep_id, handle in [(d, handles[d]) for d in job.deps if d in handles]:
                if not _collect(handle, dep_id, outcome, on_event):
                    bad.add(dep_id)
            if any(d in bad for d in job.deps):
                bad.add(job.id)
                outcome.blocked.append(job.id)
                continue
        handles[job.id] = ex.submit(run_job, plan, job)
        if on_event:
            on_event("submit", job, str(handles[job.id].job_id))
    if wait_all:
        for jid, handle in handles.items():
            _collect(handle, jid, outcome, on_event)
    return outcome


def _collect(handle, jid: str, outcome: Outcome, on_event: Event | None) -> bool:
    if jid in outcome.done or jid in outcome.failed:
        return jid in outcome.done
    try:
        wall = handle.result()
    except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error
        outcome.failed[jid] = _one_line(exc)
        return False
    outcome.done.append(jid)
    if on_event:
        on_event("done", _Named(jid), "" if wall is None else f"{wall:.1f} s")
    if wall is not None:
        outcome.wall_s[jid] = wall
    return True
