"""A killed `lmdisp evaluate` resumes: lm-eval's request cache (`use_cache`, its `CachingLM`:
a SQLite file of model answers keyed by request, committed as each answer is computed) lives
under the run folder, `lm_eval_cache/`. lm-eval keys answers by request only, so the folder
also records which model answered (`identity.json`: spec, weights location and their
modification time, backend, dtype, tokenizer). Re-running the same command with the same
`--output` after a kill finds the folder holding only that cache, checks the identity, and
asks the model only for the requests not answered yet. A failed evaluation that cached no
answer leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdisp.errors import RunDirError
from lmdisp.eval.config import EvaluateConfig
from lmdisp.eval.results import load_json, set_aside_damaged_requests
from lmdisp.runs import LOCK_NAME, LOG_FILE, RunDir

CACHE_DIR = "lm_eval_cache"


def answers_cached(cache: Path) -> bool:
    """Whether lm-eval's request cache holds an answer (it creates its database, empty, before
    the model is asked anything). A database that cannot be read counts as holding answers."""
    import sqlite3
    from contextlib import closing

    for db in cache.glob("requests*.db"):
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                if con.execute("select count(*) from unnamed").fetchone()[0]:
                    return True
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                return True
    return False


def cache_identity(cfg: EvaluateConfig, target: Any) -> dict[str, Any]:
    """What decides the model's answers to a request (lm-eval's cache key is the request).
    `target`: the `lmdisp.eval.harness.ModelTarget` the spec resolved to."""
    load = Path(target.load).expanduser()
    weights = [p for p in (load.glob("*.safetensors") if load.is_dir() else [load]) if p.is_file()]
    return {"model": target.spec, "load": target.load, "backend": cfg.backend, "dtype": cfg.dtype,
            "tokenizer": cfg.tokenizer, "weights_mtime_ns": max((p.stat().st_mtime_ns for p in weights), default=None)}


def unfinished(output: str | None) -> bool:
    """`--output` holds only the request cache (and log) of a killed evaluation."""
    out = Path(output).expanduser() if output else None
    return out is not None and out.is_dir() and {p.name for p in out.iterdir()} - {LOG_FILE, LOCK_NAME} == {CACHE_DIR}


def resumable_run(cfg: EvaluateConfig, target: Any, identity: dict) -> tuple[RunDir, bool]:
    """The run folder: `--output` holding only the request cache of a killed evaluation of the
    same model is continued (a request cache cut mid-write moved aside first); anything else goes
    through `RunDir.create` (new or empty)."""
    out = Path(cfg.output) if cfg.output else None
    if unfinished(cfg.output):
        try:
            old = load_json(out / CACHE_DIR / "identity.json")
        except (OSError, ValueError):
            old = None
        if old != identity:
            raise RunDirError(f"{out} holds the request cache of an unfinished evaluation of another model or "
                              f"setting ({old}); use a new --output")
        run = RunDir.resume(out, "evaluate")
        return run, set_aside_damaged_requests(out / CACHE_DIR)
    return RunDir.create("evaluate", target.spec, root=cfg.results_dir, output=cfg.output), False
