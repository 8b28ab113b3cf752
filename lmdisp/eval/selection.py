"""Which evaluation makes a report row's seed when a run was evaluated more than once
(at several checkpoints, by the training hook and afterwards, or re-run):

- `final` (lmdisp's default): a final evaluation (no training step) beats the checkpoints'
  ones, a later step an earlier one, a later run an earlier one;
- `best`: the evaluation with the highest average over the table's tasks (complete ones
  only; ties go to the later step), step 0 (the starting model) included. This is the
  authors' selection for GPT-2 (their plot_results.py takes, per seed, the best of the
  periodic evaluations every floor(T/5)+1 steps and the one at the start), made on the test
  data itself: an optimistic estimate, labelled as such in the report;
- `best-trained`: the same among the trained checkpoints only (step 0 left out), as their
  Qwen3 rows evidently were (docs/fidelity.md E7).
"""

from __future__ import annotations

import typing
from typing import Literal

from lmdisp.errors import ConfigError

Selection = Literal["final", "best", "best-trained"]
SELECTIONS = typing.get_args(Selection)
NO_STEP = "—"  # an evaluation of a model that is not a training run (a base-model row)


def select_runs(long, tasks: list[str], select: str, notes: list[str]):
    """One evaluation per (base model, method, seed); adds `step_label` (the training step, or
    `final` / `—` for an evaluation without one). `final`: a final evaluation (no training
    step) beats the checkpoints' ones, a later step an earlier one, a later run an earlier one.
    `best`: the evaluation with the highest average over `tasks` (complete ones only; ties go
    to the later step), as the authors' plot_results.py picks among their periodic evaluations."""
    runs = long.drop_duplicates("run").assign(final=lambda d: d["training_step"].isna(),
                                              step=lambda d: d["training_step"].fillna(-1))
    if select == "best-trained":  # the starting model is no candidate; a base row has no step and stays
        runs = runs[runs["training_step"] != 0]
    runs = runs.sort_values(["final", "step", "created"], kind="stable")
    key = ["base_model", "method", "seed"]
    if select in ("best", "best-trained"):
        scored = long[long["task"].isin(tasks)].groupby("run")["value"].agg(["mean", "count"])
        runs = runs.join(scored, on="run")
        runs["score"] = runs["mean"].where(runs["count"] == len(tasks))
        runs = runs.sort_values(["score", "final", "step", "created"], kind="stable", na_position="first")
    kept = runs.drop_duplicates(key, keep="last")
    for (base, method, seed), g in runs.groupby(key, sort=False):
        if len(g) > 1:
            chosen = kept.set_index(key).loc[(base, method, seed)]
            how = "the final one" if select == "final" else "the best average"
            notes.append(f"{base} / {method} / seed {seed} was evaluated {len(g)} times; using {how} "
                         f"(step {_step_label(chosen)}): {chosen['run']}")
    labels = {r["run"]: _step_label(r) for _, r in kept.iterrows()}
    long = long[long["run"].isin(labels)]
    return long.assign(step_label=long["run"].map(labels))


def _step_label(run) -> str:
    step = run["training_step"]
    if step is not None and step == step:  # neither None nor NaN
        return str(int(step))
    return "final" if run.get("training_run") else NO_STEP


def check_reference(reference: str, long, default: str) -> None:
    """A `--reference` that names no row is a typo: refused with the rows there are. The
    default (`dispersion`) absent from a block only gets a note (a table of baselines)."""
    import difflib

    methods = list(dict.fromkeys(long["method"]))
    if reference in methods or reference == default:
        return
    close = difflib.get_close_matches(reference, methods, 1)
    raise ConfigError(f"--reference {reference!r}: no such row" + (f" (did you mean {close[0]}?)" if close else "")
                      + f"; the rows are {', '.join(methods)}")
