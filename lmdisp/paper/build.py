"""`build_plan`: the plan of the whole paper at one scale."""

from __future__ import annotations

from pathlib import Path

from lmdisp.errors import ConfigError
from lmdisp.paper.full import full_jobs
from lmdisp.paper.mini import mini_jobs
from lmdisp.paper.plan import SCALES, Plan


def build_plan(scale: str, root: str | Path | None = None) -> Plan:
    """The plan of the whole paper at `scale` (full | mini | smoke), rooted at
    `results/paper/<scale>` unless `root` says otherwise."""
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: choose one of {', '.join(SCALES)}")
    root = (Path(root) if root is not None else Path("results") / "paper" / scale).expanduser().resolve()
    jobs = full_jobs() if scale == "full" else mini_jobs(smoke=scale == "smoke")
    return Plan(scale, root, {j.id: j for j in jobs})
