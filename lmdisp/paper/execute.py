"""Running a plan: one job at a time on a CPU (in this process, so no job pays Python's and
torch's start-up again), jobs packed onto the visible GPUs on a GPU node (a subprocess per job,
`torchrun` for training jobs that want several GPUs), or one Slurm job per plan job through
`submitit` (`lmdisp.paper.slurm`). Every path runs a job through `run_job`: state check, old
output aside, the command, the done marker.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lmdisp.paper.plan import Job, Plan, shipped_path
from lmdisp.paper.state import JobState, job_state, mark_done, prepare_folder

Event = Callable[[str, Job, str], None]  # (what, job, detail): skip | start | resume | aside | done | fail


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def resolve_argv(plan: Plan, job: Job) -> list[str]:
    """Placeholders filled in; `{ckpts:ID}` becomes several arguments; shipped config paths."""
    from lmdisp.eval.checkpoints import saved_checkpoints

    out: list[str] = []
    for arg in job.argv:
        if arg.startswith("{ckpts:") and arg.endswith("}"):
            run = plan.output(arg[7:-1])
            out += [str(folder) for _, folder in saved_checkpoints(run)] + [str(run / "final")]
            continue
        arg = arg.replace("{out}", str(plan.output(job))).replace("{root}", str(plan.root))
        for dep in job.deps:
            arg = arg.replace(f"{{dep:{dep}}}", str(plan.output(dep)))
        out.append(str(shipped_path(arg)) if arg.startswith("configs/") else arg)
    return out


def job_provenance() -> dict:
    import platform

    from lmdisp.runs import provenance

    info = provenance()
    info["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    return info


Invoke = Callable[[list[str]], None]  # runs `lmdisp ARGV` in this process (the CLI provides it)


def run_in_process(argv: list[str], log: Path, invoke: Invoke) -> None:
    """One command in this process; its console output goes to `log`. Raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if argv[0] == "lmdisp.paper.steps":
                from lmdisp.paper.steps import main as steps_main

                try:
                    steps_main(argv[1:])
                except SystemExit as exc:  # argparse refused the step's arguments
                    if exc.code:
                        raise RuntimeError(f"{' '.join(argv[:2])}: bad arguments (exit {exc.code})") from None
            else:
                invoke(argv)
    except BaseException:
        import traceback

        buffer.write(traceback.format_exc())
        raise
    finally:
        log.write_text(buffer.getvalue())


def command(argv: list[str], gpus: list[str] | None = None) -> list[str]:
    """The subprocess command line of a job: `python -m lmdisp ...`, training on several GPUs
    through torchrun (one process per GPU)."""
    if argv[0] == "lmdisp.paper.steps":
        return [sys.executable, "-m", "lmdisp.paper.steps", *argv[1:]]
    if gpus and len(gpus) > 1 and argv[0] in ("midtrain", "pretrain", "distill"):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(len(gpus)), "-m", "lmdisp", *argv]
    return [sys.executable, "-m", "lmdisp", *argv]


def start(plan: Plan, state: JobState, on_event: Event | None) -> list[str]:
    if on_event:
        on_event(state.status if state.status in ("resume", "aside") else "start", state.job, state.note)
    prepare_folder(plan, state)
    return resolve_argv(plan, state.job)


def run_job(plan: Plan, job: Job, on_event: Event | None = None, invoke: Invoke | None = None,
            gpus: list[str] | None = None) -> float | None:
    """Run one job unless it is complete: None when skipped, else its wall time. Raises on failure.
    In this process through `invoke` when given, else in a subprocess (`python -m lmdisp`)."""
    state = job_state(plan, job)
    if state.status == "done":
        if on_event:
            on_event("skip", job, "complete")
        return None
    argv = start(plan, state, on_event)
    log = plan.root / ".jobs" / f"{job.id}.log"
    t0 = time.perf_counter()
    if invoke is None or gpus:
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {})}
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            rc = subprocess.run(command(argv, gpus), stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
        if rc:
            raise RuntimeError(f"exit code {rc} (log: {log})")
    else:
        run_in_process(argv, log, invoke)
    wall = time.perf_counter() - t0
    mark_done(plan, state, wall, job_provenance())
    if on_event:
        on_event("done", job, f"{wall:.1f} s")
    return wall


def run_local(plan: Plan, jobs: list[Job], on_event: Event | None = None, invoke: Invoke | None = None) -> Outcome:
    """Sequentially, dependencies first; a failed job blocks its dependents, the rest go on."""
    outcome = Outcome()
    bad: set[str] = set()
    for job in jobs:
        if any(d in bad for d in job.deps):
            bad.add(job.id)
            outcome.blocked.append(job.id)
            continue
        try:
            wall = run_job(plan, job, on_event, invoke)
        except Exception as exc:  # noqa: BLE001 - one job's failure is reported, the plan goes on
            bad.add(job.id)
            outcome.failed[job.id] = _one_line(exc)
            if on_event:
                on_event("fail", job, outcome.failed[job.id])
            continue
        (outcome.skipped if wall is None else outcome.done).append(job.id)
        if wall is not None:
            outcome.wall_s[job.id] = wall
    return outcome


@contextlib.contextmanager
def plan_lock(plan: Plan):
    """One `lmdisp paper` per plan folder at a time (`lmdisp.locks`: a second one is refused with
    the holder's name; the kernel frees the lock of a killed one)."""
    from lmdisp import locks

    folder = plan.root / ".jobs"
    folder.mkdir(parents=True, exist_ok=True)
    locks.acquire(folder, "lmdisp paper")
    try:
        yield
    finally:
        locks.release(folder)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
