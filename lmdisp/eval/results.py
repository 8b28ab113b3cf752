"""lm-eval's nested results as tidy tables, and the one writer of an evaluation run folder
(used by `lmdisp evaluate` and by the training commands' periodic evaluation).

Results are keyed `"acc,none"`, `"acc_stderr,none"`; they are flattened once, here, into
rows (task, metric, filter, value, stderr, unit, n_shot, limit, n). Fractions become
percent; perplexities keep their unit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdisp.config import as_dict
from lmdisp.errors import DataError
from lmdisp.jsontext import json_text
from lmdisp.runs import RunDir, slugify, write_json, write_table, write_text

# The metric a task reports when neither the preset nor the task list names one.
METRIC_PREFERENCE = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity", "perplexity")
_PERCENT = re.compile(r"^(acc|exact_match|f1|mcc|em|mc1|mc2|pass@)")  # fractions in [0, 1] -> %


def flatten(raw: dict, plan: dict[str, dict], limit: Any):
    """lm-eval's nested results -> (one row per task with its reported metric, every metric)."""
    import pandas as pd

    rows = [_task_row(raw, name, settings["metric"], limit) for name, settings in plan.items()]
    every = []
    for name, entry in raw["results"].items():
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = entry.get(f"{metric}_stderr,{filt}")
            every.append({"task": name, "metric": metric, "filter": filt, **_scaled(metric, value, stderr),
                          "n_shot": _n_shot(raw, name), "n": _n(raw, name)})
    return pd.DataFrame(rows), pd.DataFrame(every)


def _task_row(raw: dict, name: str, metric: str | None, limit: Any) -> dict:
    entry = raw["results"].get(name, {})
    found: dict[str, str] = {}  # metric -> its first key ("exact_match,strict-match", ...)
    for k in entry:
        if "," in k and "_stderr," not in k:
            found.setdefault(k.partition(",")[0], k)
    if metric is None:
        metric = next((m for m in METRIC_PREFERENCE if m in found), next(iter(found), None))
    if metric not in found:
        raise DataError(f"lm-eval returned no `{metric}` for task `{name}` (it has {', '.join(found) or 'nothing'})")
    key = f"{metric},none" if f"{metric},none" in entry else found[metric]
    stderr = entry.get(key.replace(",", "_stderr,", 1))
    higher = raw.get("higher_is_better", {}).get(name, {}).get(metric, not metric.endswith("perplexity"))
    return {"task": name, "metric": metric, "filter": key.partition(",")[2], **_scaled(metric, entry[key], stderr),
            "n_shot": _n_shot(raw, name),
            "limit": limit, "n": _n(raw, name), "higher_is_better": bool(higher)}


def _scaled(metric: str, value: float, stderr: Any) -> dict:
    pct = bool(_PERCENT.match(metric))
    scale = 100.0 if pct else 1.0
    err = float(stderr) * scale if isinstance(stderr, (int, float)) else float("nan")
    return {"value": float(value) * scale, "stderr": err, "unit": "%" if pct else ""}


def _leaves(raw: dict, name: str) -> list[str]:
    children = raw.get("group_subtasks", {}).get(name)
    return [leaf for c in children for leaf in _leaves(raw, c)] if children else [name]


def _n(raw: dict, name: str) -> int:
    return sum(int(raw.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in _leaves(raw, name))


def _n_shot(raw: dict, name: str):
    shots = {raw.get("n-shot", {}).get(t) for t in _leaves(raw, name)} - {None}
    return shots.pop() if len(shots) == 1 else (None if not shots else "mixed")


@dataclass
class EvaluateRun:
    path: Path
    table: Any          # pandas DataFrame: one row per task (reported metric)
    metrics: Any        # pandas DataFrame: every metric of every task and subtask
    manifest: dict = field(default_factory=dict)


def write_evaluation(run: RunDir, raw: dict, plan: dict[str, dict], cfg: Any, **extra) -> EvaluateRun:
    """The one writer of an evaluation run folder (the command and the training hooks)."""
    import json

    samples = raw.pop("samples", None) or {}
    for task, items in samples.items():
        write_text(run.path / "samples" / f"{slugify(task)}.jsonl",
                   "".join(json_text(s) + "\n" for s in items))
    write_json(run.path / "lm_eval_results.json", raw)  # first: kept even if a metric is missing below
    table, metrics = flatten(raw, plan, cfg.limit)
    write_table(table, run.path / "tasks", float_format="%.10g")
    write_table(metrics, run.path / "metrics", float_format="%.10g")
    used = [b for c in raw.get("lmdisp_calls", []) for b in (c.get("config") or {}).get("batch_sizes", [])]
    extra["batch_sizes_used"] = used or None
    run.write_manifest(as_dict(cfg), **extra)
    manifest = json.loads((run.path / "manifest.json").read_text())
    run.release()  # complete: another process may read or continue it now
    return EvaluateRun(run.path, table, metrics, manifest)


# ----------------------------------------------------------------------------- reading back

def read_manifest(folder: Path) -> dict:
    """An evaluation run's manifest.json, or a DataError naming the folder."""
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{folder}: damaged manifest.json ({str(exc).splitlines()[0]}); re-run its evaluation "
                        "or move the folder out of the way") from None
    if not isinstance(data, dict):
        raise DataError(f"{folder}: damaged manifest.json (not a JSON object)")
    return data


# Columns of tasks.csv a report needs (written by `write_evaluation`).
_TASK_COLUMNS = ("task", "metric", "value", "n_shot", "limit", "higher_is_better")


def read_tasks_csv(folder: Path):
    """An evaluation run's tasks.csv with the columns a report needs, or a DataError naming the folder."""
    import pandas as pd

    try:
        tasks = pd.read_csv(folder / "tasks.csv")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' EmptyDataError/ParserError are ValueErrors
        raise DataError(f"{folder}: damaged tasks.csv ({str(exc).splitlines()[0]})") from None
    missing = [c for c in _TASK_COLUMNS if c not in tasks.columns]
    if missing or tasks.empty:
        what = f"no column {', '.join(missing)}" if missing else "no rows"
        raise DataError(f"{folder}: damaged tasks.csv ({what}); re-run its evaluation or move the folder out of the way")
    if not pd.api.types.is_numeric_dtype(tasks["value"]):
        raise DataError(f"{folder}: damaged tasks.csv (non-numeric `value`)")
    return tasks


def load_json(path: Path):
    return json.loads(Path(path).read_text())


def set_aside_damaged_requests(cache: Path) -> bool:
    """Move aside lm-eval request-cache databases (`requests_rank<i>.db`) that SQLite finds
    damaged (a file cut mid-write): their answers are asked again, never read. True."""
    import logging
    import sqlite3
    from contextlib import closing

    from lmdisp.integrity import move_aside

    for db in sorted(Path(cache).glob("requests*.db")):
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                status = con.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            status = str(exc)
        if status != "ok":
            aside = move_aside(db)
            logging.getLogger("lmdisp").warning("request cache %s is damaged (%s): moved aside to %s; its answers "
                                                "are asked again", db, status, aside.name)
    return True
