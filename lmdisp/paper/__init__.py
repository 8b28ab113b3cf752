"""`lmdisp paper`: the whole paper as one resumable plan of jobs (`plan`), run locally, packed on
GPUs or on Slurm (`execute`, `cluster`), into one report (`report`)."""

from lmdisp.paper.build import build_plan
from lmdisp.paper.plan import ARTEFACTS, SCALES, Job, Plan, job_hash

__all__ = ["ARTEFACTS", "SCALES", "Job", "Plan", "build_plan", "job_hash"]
