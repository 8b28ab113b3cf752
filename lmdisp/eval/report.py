"""`lmdisp report`: the paper's Table 2 (and 3, 4, 5) from your own evaluation runs.

    from lmdisp.eval import ReportConfig, run_report
    run = run_report(ReportConfig(runs=["results/table2/evals"]))
    print(run.path, run.values)

Input: `lmdisp evaluate` run folders (their `manifest.json` labels and `tasks.csv`); a folder
that is not one is searched for them. Rows are (base model, method); the runs of a row are
its seeds, and the rows of one base model form a block. Per row:

- per task: mean +- sample standard deviation (n - 1) over the seeds, in %;
- Average: the mean over the table's tasks, per seed, then mean +- std over the seeds. A row
  whose seeds miss any task gets no Average, Rank or p (shown as "—", with a note naming the
  missing tasks): never an average over a subset;
- Rank: within the block, each task ranks the complete rows by their mean (1 = best, ties
  share the mean rank); the row's Rank is the mean over tasks;
- p: Student's t-test (equal variances, `scipy.stats.ttest_ind`) of the row's per-seed
  Averages against the reference row's (default the `dispersion` row of the block), shown as
  p < 0.0001 / p < 0.01 / p < 0.05 / n.s.; "ref." for the reference, "single seed" when
  either side has one seed.

Run folder: `table.csv/.md/.tex` (formatted; Markdown and LaTeX with the best of each column
of a block in bold, booktabs), `table_values.csv/.md` (the numbers), `runs.csv/.md` (every
run and task read), `averages.png` (bar chart, error bars = std) and `manifest.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmdisp.config import OUTPUT_PANEL, as_dict, option, require, validate
from lmdisp.errors import ConfigError, DataError
from lmdisp.eval.results import read_manifest, read_tasks_csv
from lmdisp.eval.selection import Selection, check_reference, select_runs
from lmdisp.eval.table_formats import DASH, bar_chart, caption, formatted, header, latex, markdown
from lmdisp.runs import RunDir, save_figure, slugify, write_table, write_text

# Display order of the methods inside a block (the paper's Table 2); others follow by name.
METHOD_ORDER = ("base", "ce", "noisy-embedding", "active-forgetting", "decorrelation", "l2-repel", "l2-repel-paper",
                "orthogonalization", "infonce-cos", "dispersion")
_TABLE = "Table"


@dataclass
class ReportConfig:
    runs: list[str] = option(None, "`lmdisp evaluate` run folders, or folders holding them (searched "
                             "recursively).", cli="arg", factory=list)
    reference: str = option("dispersion", "Method each row is t-tested against, in every base model's block.",
                            panel=_TABLE)
    tasks: list[str] | None = option(None, "Table columns, comma-separated (None: every task of the runs, the "
                                     "paper's order first).", panel=_TABLE)
    output: str | None = option(None, "Exact run folder (new or empty).", short="-o", panel=OUTPUT_PANEL)
    results_dir: str = option("results", "Where timestamped run folders go.", panel=OUTPUT_PANEL)
    plots: bool = option(True, "Write the bar chart of the averages.", panel=OUTPUT_PANEL)
    select: Selection = option("final", "Which evaluation of a run and seed makes the row: final (its last checkpoint, "
                         "lmdisp's default) | best (the best average over the table's tasks among its "
                         "checkpoints, step 0 included: the authors' selection, made on the test data itself) | "
                         "best-trained (the same without step 0).", panel=_TABLE)

    RENAMED: ClassVar[dict[str, str]] = {"plot": "plots"}  # old name -> new: a one-line hint

    def __post_init__(self):
        if isinstance(self.runs, (str, Path)):
            self.runs = [str(self.runs)]
        validate(self)  # each field's type and choices (lmdisp.config); below: the rest
        require(bool(self.runs), "give at least one evaluation run folder (or a folder holding them)")
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        require(self.tasks is None or len(self.tasks) > 0, "--tasks: give at least one task")


@dataclass
class ReportRun:
    path: Path
    values: Any          # pandas DataFrame: the numbers, one row per (base model, method)
    display: Any         # pandas DataFrame: the formatted table
    notes: list[str]
    tasks: list[str] = field(default_factory=list)
    table: Any = None    # `values` plus per-task seed counts: what `formatted` takes
    select: str = "final"  # how each seed's evaluation was chosen (ReportConfig.select)


# ----------------------------------------------------------------------------- statistics

def t_test(a, b, equal_var: bool = True) -> float:
    """Two-sided p of Student's t-test with equal variances (scipy.stats.ttest_ind; Welch's with
    `equal_var=False`)."""
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # scipy warns on (nearly) identical samples; p is still its own
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=equal_var).pvalue)


def significance(p: float) -> str:
    if p != p:  # identical constant samples: no evidence of a difference
        return "n.s."
    for bound in (0.0001, 0.01, 0.05):
        if p < bound:
            return f"p < {bound:g}"
    return "n.s."


# ----------------------------------------------------------------------------- reading

def find_runs(paths: list[str]) -> list[Path]:
    """Evaluation run folders among `paths` and below them, in order, each once."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"no such folder: {p}")
        candidates = [p] if _is_eval_run(p) else sorted(m.parent for m in p.rglob("manifest.json"))
        found += [c for c in candidates if _is_eval_run(c) and c not in found]
    if not found:
        raise ConfigError(f"no evaluation runs (folders with manifest.json and tasks.csv written by "
                          f"`lmdisp evaluate`) in {', '.join(paths)}")
    return found


def _is_eval_run(path: Path) -> bool:
    """A folder `lmdisp evaluate` wrote. A folder with both files whose manifest cannot be read
    is refused (naming it) rather than silently left out of the table."""
    if not ((path / "manifest.json").is_file() and (path / "tasks.csv").is_file()):
        return False
    return read_manifest(path).get("command") == "evaluate"


def read_runs(folders: list[Path]):
    """One tidy frame: every task of every run, with the run's report labels."""
    import pandas as pd

    frames = []
    for folder in folders:
        manifest = read_manifest(folder)
        labels = manifest.get("labels") or {}
        tasks = read_tasks_csv(folder)
        try:
            seed = int(labels.get("seed", manifest.get("seed", 0)))
        except (TypeError, ValueError):
            raise DataError(f"{folder}: damaged manifest.json (seed {labels.get('seed')!r})") from None
        tasks.insert(0, "run", str(folder))
        tasks.insert(1, "base_model", str(labels.get("base_model", manifest.get("model"))))
        tasks.insert(2, "method", str(labels.get("method", "base")))
        tasks.insert(3, "seed", seed)
        tasks.insert(4, "created", manifest.get("created", ""))
        tasks.insert(5, "training_step", manifest.get("training_step"))  # set by the training hooks
        tasks.insert(6, "training_run", manifest.get("training_run") or "")
        config, model_info = manifest.get("config") or {}, manifest.get("model_info") or {}
        tasks.insert(7, "backend", str(config.get("backend", "hf")))
        tasks.insert(8, "dtype", str(model_info.get("dtype") or config.get("dtype", "auto")))
        frames.append(tasks)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- the table

def _paper_tasks() -> list[str]:
    from lmdisp.config import read_yaml, resolve_config
    from lmdisp.eval.config import normalize_tasks

    return list(normalize_tasks(read_yaml(resolve_config("paper", "eval")).get("tasks")))


def _method_key(method: str) -> tuple:
    head = method.split(" ")[0]
    return (METHOD_ORDER.index(head) if head in METHOD_ORDER else len(METHOD_ORDER), method)


def build_table(long, tasks: list[str] | None = None, reference: str = "dispersion", select: str = "final"):
    """(numeric table, tasks, notes) from the tidy runs frame; `select` picks the evaluation of
    each (row, seed) among several (checkpoints, re-runs): see `select_runs`."""
    import numpy as np
    import pandas as pd

    notes: list[str] = []
    long = _split_mixed_settings(long, notes)
    if tasks is None:
        paper = _paper_tasks()
        seen = list(dict.fromkeys(long["task"]))
        tasks = [t for t in paper if t in seen] + [t for t in seen if t not in paper]
    long = select_runs(long, tasks, select, notes)
    for task, g in long[long["task"].isin(tasks)].groupby("task", sort=False):
        for col in ("metric", "n_shot", "limit"):
            vals = sorted({str(v) for v in g[col]})
            if len(vals) > 1:
                notes.append(f"`{task}`: the runs differ in {col} ({', '.join(vals)})")
    higher = {t: bool(long.loc[long["task"] == t, "higher_is_better"].iloc[0]) if (long["task"] == t).any() else True
              for t in tasks}

    rows = []
    blocks = list(dict.fromkeys(long["base_model"]))
    for base in blocks:
        in_block = long[long["base_model"] == base]
        for method in sorted(dict.fromkeys(in_block["method"]), key=_method_key):
            g = in_block[in_block["method"] == method]
            seeds = sorted(g["seed"].unique())
            by_seed = g.set_index(["seed", "task"])["value"].unstack().reindex(index=seeds, columns=tasks)
            step_of = g.drop_duplicates("seed").set_index("seed")["step_label"]
            row: dict[str, Any] = {"base_model": base, "method": method, "n_seeds": len(seeds),
                                   "seeds": ",".join(map(str, seeds)),
                                   "steps": ",".join(str(step_of[s]) for s in seeds)}
            missing = []
            for t in tasks:
                vals = by_seed[t].dropna()
                row[t], row[f"{t}_std"], row[f"{t}_n"] = (vals.mean() if len(vals) else np.nan,
                                                          vals.std(ddof=1) if len(vals) > 1 else np.nan, len(vals))
                if len(vals) < len(seeds):
                    lacking = [str(s) for s in seeds if s not in vals.index]
                    missing.append(t if len(vals) == 0 else f"{t} (seed {', '.join(lacking)})")
            averages = by_seed.mean(axis=1) if not missing else pd.Series(dtype=float)
            row.update(average=averages.mean() if not missing else np.nan,
                       average_std=averages.std(ddof=1) if len(averages) > 1 else np.nan,
                       seed_averages=list(averages), missing_tasks="; ".join(missing))
            if missing:
                notes.append(f"{base} / {method}: no Average, Rank or p, missing {', '.join(missing)}")
            elif len(seeds) == 1:
                notes.append(f"{base} / {method}: a single seed ({seeds[0]}), so no std and no t-test")
            rows.append(row)
    table = pd.DataFrame(rows)
    table["rank"], table["p_value"], table["significance"] = np.nan, np.nan, DASH
    for base in blocks:
        _rank_and_test(table, table.index[table["base_model"] == base], tasks, higher, reference, notes)
    return table, tasks, notes


def _split_mixed_settings(long, notes: list[str]):
    """Runs of one row scored by different backends (hf, vllm) or dtypes are never averaged
    together: each setting becomes its own row, `method [backend, dtype]`, with a note."""
    if "backend" not in long:
        return long
    setting = long["backend"].astype(str) + ", " + long["dtype"].astype(str)
    mixed = setting.groupby([long["base_model"], long["method"]]).transform("nunique") > 1
    for (base, method), g in setting[mixed].groupby([long["base_model"][mixed], long["method"][mixed]]):
        notes.append(f"{base} / {method}: runs scored with different settings ({'; '.join(sorted(set(g)))}) "
                     "are reported as separate rows, not averaged")
    return long.assign(method=long["method"].where(~mixed, long["method"] + " [" + setting + "]"))


def _rank_and_test(table, idx, tasks, higher, reference, notes) -> None:
    import numpy as np

    block = table.loc[idx]
    complete = block[block["missing_tasks"] == ""]
    if len(complete):
        ranks = [complete[t].rank(ascending=not higher[t], method="average") for t in tasks]
        table.loc[complete.index, "rank"] = np.mean(ranks, axis=0)
    refs = block[block["method"] == reference]
    loss = block["method"].str.partition(" (")[0]
    loose = block[(loss == reference) | loss.str.startswith(reference + "-")]
    if refs.empty and len(loose) == 1:  # Qwen3's `dispersion (lambda=1.0)`, Table 5's `dispersion-torchtitan (...)`
        refs, reference = loose, loose["method"].iloc[0]
    base = block["base_model"].iloc[0]
    if refs.empty:
        notes.append(f"{base}: no `{reference}` row to t-test against (choose one with --reference)")
        return
    ref = refs.iloc[0]
    for i, row in block.iterrows():
        if row["method"] == reference:
            table.loc[i, "significance"] = "ref."
        elif row["missing_tasks"] or ref["missing_tasks"]:
            table.loc[i, "significance"] = DASH
        elif row["n_seeds"] < 2 or ref["n_seeds"] < 2:
            table.loc[i, "significance"] = "single seed"
        else:
            p = t_test(row["seed_averages"], ref["seed_averages"])
            table.loc[i, "p_value"], table.loc[i, "significance"] = p, significance(p)


def run_report(cfg: ReportConfig) -> ReportRun:
    import pandas as pd

    RunDir.check("report", root=cfg.results_dir, output=cfg.output)
    folders = find_runs(cfg.runs)
    long = read_runs(folders)
    check_reference(cfg.reference, long, default=ReportConfig.reference)
    table, tasks, notes = build_table(long, cfg.tasks, cfg.reference, cfg.select)
    absent = [t for t in tasks if t not in set(long["task"])]
    require(not absent, f"--tasks: no run has {', '.join(absent)}")
    name = "+".join(dict.fromkeys(table["base_model"]))
    run = RunDir.create("report", slugify(name), root=cfg.results_dir, output=cfg.output)
    cap = caption(long, tasks, cfg.reference, cfg.select)
    display = pd.DataFrame(formatted(table, tasks, "plain"), columns=header(tasks))
    write_text(run.path / "table.csv", display.to_csv(index=False))
    write_text(run.path / "table.md", markdown(table, tasks, cap, notes))
    write_text(run.path / "table.tex", latex(table, tasks, cap, notes))
    values = table.drop(columns=[f"{t}_n" for t in tasks])
    values["seed_averages"] = [",".join(f"{a:.10g}" for a in v) for v in values["seed_averages"]]
    write_table(values, run.path / "table_values", float_format="%.10g")
    write_table(long, run.path / "runs", float_format="%.10g")
    if cfg.plots and table["average"].notna().any():
        save_figure(bar_chart(table), run.path / "averages.png")
    run.write_manifest(as_dict(cfg), runs=[str(f) for f in folders], tasks=tasks, notes=notes)
    run.release()
    return ReportRun(run.path, values, display, notes, tasks, table, cfg.select)
