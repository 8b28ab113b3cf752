"""The paper as a plan: jobs (one command line each) with dependencies, for every artefact.

A job's command line is an `lmdisp` command (measure, midtrain, pretrain, distill, evaluate,
report) or an internal step of this package (`python -m lmdisp.paper.steps ...`: offline task
data, figures). Command lines may hold placeholders, filled in when the job runs:

- `{out}`: the job's own output folder (`<root>/<job id>`);
- `{dep:ID}`: the output folder of job ID (which must be among the job's dependencies);
- `{ckpts:ID}`: every saved checkpoint of the training run ID, then its final model;
- `{root}`: the plan's root folder.

A job is complete when its output folder holds `.paper-done.json` with the hash of its
resolved config (`job_hash`: the command line as written plus the content of every config file
it names), so a changed config reruns the job and an unchanged one is skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmdisp.errors import ConfigError

SCALES = ("full", "mini", "smoke")
KINDS = ("prepare", "measure", "train", "evaluate", "tabulate", "figure")
ARTEFACTS = ("fig2", "figS2", "fig3", "fig4", "fig5", "fig7", "table2", "table3", "table4", "table5")
TRAIN_COMMANDS = ("midtrain", "pretrain", "distill")
_PLACEHOLDER = re.compile(r"\{(out|root|dep:[^{}]+|ckpts:[^{}]+)\}")


@dataclass
class Job:
    """One command of the plan. `argv` excludes the program: `["measure", "gpt2", ...]` runs as
    `lmdisp measure gpt2 ...`; a first element `lmdisp.paper.steps` runs that module."""

    id: str
    kind: str
    argv: list[str]
    artefacts: list[str]
    deps: list[str] = field(default_factory=list)
    gpu_hours: float | None = None   # at full scale, per job
    cost_source: str = "estimate"    # where gpu_hours comes from ("paper Table 2", or "estimate: ...")
    gpus: int = 0                    # GPUs the job wants at full scale (0: CPU)
    minutes: float | None = None     # expected minutes at mini/smoke scale on one CPU

    @property
    def program(self) -> str:
        return "python -m lmdisp.paper.steps" if self.argv[0] == "lmdisp.paper.steps" else "lmdisp"

    @property
    def args(self) -> list[str]:
        return self.argv[1:] if self.argv[0] == "lmdisp.paper.steps" else self.argv

    @property
    def resumable(self) -> bool:
        return self.kind == "train" and self.argv[0] in TRAIN_COMMANDS

    def command_line(self) -> str:
        import shlex

        return " ".join([self.program, *(shlex.quote(a) for a in self.args)])


@dataclass
class Plan:
    scale: str
    root: Path
    jobs: dict[str, Job]

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Every dependency exists, every placeholder names a dependency, no cycles."""
        for job in self.jobs.values():
            require_known(job.kind in KINDS, f"job {job.id}: unknown kind {job.kind}")
            for dep in job.deps:
                require_known(dep in self.jobs, f"job {job.id} depends on {dep}, which is not in the plan")
            for ref in placeholders(job.argv):
                if ":" in ref:
                    require_known(ref.split(":", 1)[1] in job.deps,
                                  f"job {job.id}: {{{ref}}} names a job that is not one of its dependencies")
        self.order()

    def order(self, ids: list[str] | None = None) -> list[Job]:
        """The jobs (all, or `ids` and what they need) in an order where dependencies come first."""
        wanted = self.closure(ids) if ids is not None else set(self.jobs)
        done: list[str] = []
        state: dict[str, int] = {}

        def visit(jid: str) -> None:
            if state.get(jid) == 2:
                return
            require_known(state.get(jid) != 1, f"the plan has a dependency cycle through {jid}")
            state[jid] = 1
            for dep in self.jobs[jid].deps:
                visit(dep)
            state[jid] = 2
            done.append(jid)

        for jid in self.jobs:  # definition order, so the printed plan reads like the paper
            if jid in wanted:
                visit(jid)
        return [self.jobs[j] for j in done]

    def closure(self, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(ids)
        while stack:
            jid = stack.pop()
            if jid not in seen:
                seen.add(jid)
                stack.extend(self.jobs[jid].deps)
        return seen

    def select(self, only: list[str] | None) -> list[Job]:
        """`--only fig7,table2`: the jobs of those artefacts (or job ids / id prefixes) and their
        dependencies, in run order. Unknown names are refused with the valid ones."""
        if not only:
            return self.order()
        ids: list[str] = []
        for name in only:
            hits = [j.id for j in self.jobs.values()
                    if name in j.artefacts or j.id == name or j.id.startswith(name.rstrip("/") + "/")]
            if not hits:
                raise ConfigError(f"--only {name}: not an artefact or job of the {self.scale} plan; choose from "
                                  f"{', '.join(self.artefacts())} (or a job id: lmdisp paper --dry-run)")
            ids.extend(hits)
        return self.order(ids)

    def artefacts(self) -> list[str]:
        seen = {a for j in self.jobs.values() for a in j.artefacts}
        return [a for a in ARTEFACTS if a in seen]

    def output(self, job: Job | str) -> Path:
        jid = job if isinstance(job, str) else job.id
        return self.root / jid


def require_known(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def placeholders(argv: list[str]) -> list[str]:
    return [m.group(1) for a in argv for m in _PLACEHOLDER.finditer(a)]


def shipped_path(arg: str) -> Path:
    """`configs/midtrain/gpt2-ce.yaml` as written in a job (and in the Makefile): that file in the
    checkout when it is there, else the copy installed with the package."""
    path = Path(arg)
    if not path.exists() and arg.startswith("configs/"):
        from lmdisp.config import packaged

        shipped = Path(str(packaged(*path.parts[1:])))
        if shipped.exists():
            return shipped
    return path


def config_files(argv: list[str]) -> list[Path]:
    """The config files a command line names (any .yaml/.json path that exists)."""
    found = []
    for arg in argv:
        if "{" not in arg and arg.endswith((".yaml", ".yml", ".json")):
            path = shipped_path(arg)
            if path.is_file():
                found.append(path)
    return found


def job_hash(job: Job, plan: Plan | None = None) -> str:
    """The hash of a job's resolved config: its command line as written, the content of every
    config file it names (a config edited on disk changes the hash, so the job reruns) and, with
    `plan`, its dependencies' hashes (a rerun input reruns what was made from it)."""
    blob = {"argv": job.argv, "files": [p.read_text() for p in config_files(job.argv)],
            "deps": [job_hash(plan.jobs[d], plan) for d in job.deps] if plan is not None else []}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
