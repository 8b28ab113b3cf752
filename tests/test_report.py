"""`lmdisp report` on hand-made evaluation runs, written by the evaluate command's own writer."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_ind

from lmdisp.eval.results import write_evaluation
from lmdisp.eval.config import EvaluateConfig
from lmdisp.eval.report import ReportConfig, run_report, significance
from lmdisp.runs import RunDir

# (base model, method) -> seed -> {task: accuracy in %}; the column order must follow the paper
RUNS = {
    ("gpt2", "base"): {1: {"piqa": 60.0, "arc_easy": 40.0, "mmlu": 26.0}},
    ("gpt2", "ce"): {1: {"piqa": 61.0, "arc_easy": 41.0, "mmlu": 25.5},
                     2: {"piqa": 61.5, "arc_easy": 41.5, "mmlu": 25.0},
                     3: {"piqa": 60.5, "arc_easy": 42.0, "mmlu": 26.0}},
    ("gpt2", "dispersion"): {1: {"piqa": 62.0, "arc_easy": 43.0, "mmlu": 26.0},
                             2: {"piqa": 63.0, "arc_easy": 42.5, "mmlu": 26.5},
                             3: {"piqa": 62.5, "arc_easy": 43.5, "mmlu": 25.5}},
    ("gpt2", "l2-repel"): {1: {"piqa": 61.0, "arc_easy": 41.0, "mmlu": 25.0}, 2: {"piqa": 61.0, "arc_easy": 41.0},
                           3: {"piqa": 61.0, "arc_easy": 41.0, "mmlu": 25.0}},
    ("gpt2-medium", "ce"): {1: {"piqa": 65.0, "arc_easy": 45.0, "mmlu": 27.0},
                            2: {"piqa": 66.0, "arc_easy": 46.0, "mmlu": 27.5}},
    ("gpt2-medium", "dispersion"): {1: {"piqa": 67.0, "arc_easy": 48.0, "mmlu": 28.0},
                                    2: {"piqa": 67.5, "arc_easy": 47.5, "mmlu": 28.5}},
}
TASKS = ["piqa", "arc_easy", "mmlu"]


def fake_run(folder, base, method, seed, values):
    """An evaluation run folder as `lmdisp evaluate` writes it, from lm-eval-shaped raw results."""
    cfg = EvaluateConfig(model=base, tasks=list(values), limit=500)
    raw = {"results": {t: {"alias": t, "acc,none": v / 100, "acc_stderr,none": 0.02} for t, v in values.items()},
           "n-shot": {t: 0 for t in values}, "n-samples": {t: {"original": 900, "effective": 500} for t in values},
           "higher_is_better": {t: {"acc": True} for t in values}, "group_subtasks": {}}
    write_evaluation(RunDir.create("evaluate", "x", output=folder), raw, cfg.tasks, cfg, seed=seed,
                     labels={"base_model": base, "method": method, "seed": seed})


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "evals"
    root.mkdir()
    for (base, method), seeds in RUNS.items():
        for seed, values in seeds.items():
            fake_run(root / f"{base}-{method}-{seed}", base, method, seed, values)
    return root


def _averages(base, method):
    return [np.mean([v[t] for t in TASKS]) for v in RUNS[(base, method)].values()]


def test_means_averages_ranks_and_t_tests(runs, tmp_path):
    run = run_report(ReportConfig(runs=[str(runs)], output=str(tmp_path / "report")))
    v = run.values.set_index(["base_model", "method"])
    assert list(run.values["method"][:4]) == ["base", "ce", "l2-repel", "dispersion"]  # the paper's row order
    assert [c for c in run.display.columns if c in TASKS] == TASKS                       # paper's column order
    ce = pd.DataFrame(RUNS[("gpt2", "ce")]).T
    assert v.loc[("gpt2", "ce"), "arc_easy"] == pytest.approx(ce["arc_easy"].mean())
    assert v.loc[("gpt2", "ce"), "arc_easy_std"] == pytest.approx(ce["arc_easy"].std(ddof=1))
    for key in [("gpt2", "ce"), ("gpt2", "dispersion"), ("gpt2-medium", "ce")]:
        assert v.loc[key, "average"] == pytest.approx(np.mean(_averages(*key)))
        assert v.loc[key, "average_std"] == pytest.approx(np.std(_averages(*key), ddof=1))
    # ranks by hand: piqa 3/2/1, arc_easy 3/2/1, mmlu base and dispersion tie (26.0) ahead of ce
    assert v.loc[("gpt2", "base"), "rank"] == pytest.approx((3 + 3 + 1.5) / 3)
    assert v.loc[("gpt2", "ce"), "rank"] == pytest.approx((2 + 2 + 3) / 3)
    assert v.loc[("gpt2", "dispersion"), "rank"] == pytest.approx((1 + 1 + 1.5) / 3)
    assert v.loc[("gpt2-medium", "dispersion"), "rank"] == 1 and v.loc[("gpt2-medium", "ce"), "rank"] == 2
    # Student's t-test of the per-seed averages against the dispersion row, as scipy computes it
    for base in ("gpt2", "gpt2-medium"):
        p = ttest_ind(_averages(base, "ce"), _averages(base, "dispersion"), equal_var=True).pvalue
        assert v.loc[(base, "ce"), "p_value"] == pytest.approx(p, rel=1e-12)
        assert v.loc[(base, "ce"), "significance"] == significance(p)
        assert v.loc[(base, "dispersion"), "significance"] == "ref."
    # single seed: no std, no t-test, and the table says so
    assert np.isnan(v.loc[("gpt2", "base"), "average_std"]) and v.loc[("gpt2", "base"), "significance"] == "single seed"
    assert any("gpt2 / base: a single seed" in n for n in run.notes)
    # a missing task: no Average, Rank or p, and a note naming it (never a silent subset average)
    assert np.isnan(v.loc[("gpt2", "l2-repel"), "average"]) and np.isnan(v.loc[("gpt2", "l2-repel"), "rank"])
    assert v.loc[("gpt2", "l2-repel"), "significance"] == "—"
    assert any("l2-repel" in n and "mmlu (seed 2)" in n for n in run.notes)
    shown = run.display.set_index("Method")
    assert shown.loc["l2-repel", "Average"] == "—" and shown.loc["l2-repel", "mmlu"] == "25.00 ± 0.00 (2/3)"
    assert shown.loc["base", "piqa"] == "60.00"                         # single seed: no ± part
    for name in ("table.csv", "table.md", "table.tex", "table_values.csv", "table_values.md", "runs.csv",
                 "averages.png", "manifest.json"):
        assert (run.path / name).is_file(), name


def test_latex_and_markdown_bold_the_best_of_each_block(runs, tmp_path):
    run = run_report(ReportConfig(runs=[str(runs)], output=str(tmp_path / "report"), plots=False))
    tex = (run.path / "table.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "arc\\_easy" in tex
    rows, base = {}, None
    for line in tex.splitlines()[tex.splitlines().index("\\midrule"):]:
        if line.count(" & ") > 5:
            base = line.split(" & ")[0] or base
            rows[(base, line.split(" & ")[1])] = line
    disp = RUNS[("gpt2", "dispersion")]
    best_avg = f"\\mathbf{{{np.mean(_averages('gpt2', 'dispersion')):.2f}}}"
    assert best_avg in rows[("gpt2", "dispersion")] and "\\mathbf" not in rows[("gpt2", "l2-repel")]
    assert rows[("gpt2", "base")].count("\\mathbf") == 1                # only its tied-best mmlu
    assert f"{np.mean([s['piqa'] for s in disp.values()]):.2f}" in rows[("gpt2", "dispersion")]
    assert "\\mathbf" not in rows[("gpt2-medium", "ce")]
    p = ttest_ind(_averages("gpt2", "ce"), _averages("gpt2", "dispersion")).pvalue  # the ce row vs ref.
    label = significance(p)
    assert (label if label == "n.s." else f"${label}$") in rows[("gpt2", "ce")]
    assert "ref." in rows[("gpt2", "dispersion")]
    md = (run.path / "table.md").read_text()
    assert "**" in md and "Notes:" in md and "Student's t-test" in md
    assert not (run.path / "averages.png").exists()


def test_reference_option_and_csv_values(runs, tmp_path):
    run = run_report(ReportConfig(runs=[str(runs)], reference="ce", output=str(tmp_path / "report")))
    v = run.values.set_index(["base_model", "method"])
    assert v.loc[("gpt2", "ce"), "significance"] == "ref."
    p = ttest_ind(_averages("gpt2", "dispersion"), _averages("gpt2", "ce")).pvalue
    assert v.loc[("gpt2", "dispersion"), "p_value"] == pytest.approx(p, rel=1e-12)
    csv = pd.read_csv(run.path / "table_values.csv")
    assert csv["average"].notna().sum() == 5 and set(csv["significance"]) >= {"ref.", "single seed", "—"}


def test_report_cli(run_cli, runs, tmp_path):
    res = run_cli("report", runs, "--output", tmp_path / "report", "--tasks", "piqa,arc_easy")
    assert res.code == 0, res.err
    assert "Evaluation summary" in res.out and "ref." in res.out and "note:" in res.out
    values = pd.read_csv(tmp_path / "report" / "table_values.csv")
    assert "mmlu" not in values.columns
    assert values["average"].notna().sum() == 6                          # l2-repel is complete without mmlu


@pytest.mark.parametrize("args, expect", [
    ([], "give at least one evaluation run folder"),
    (["{tmp}/nowhere"], "no such folder"),
    (["{tmp}"], "no evaluation runs"),
])
def test_report_cli_errors_are_one_line(run_cli, tmp_path, args, expect):
    res = run_cli("report", *[a.format(tmp=tmp_path) for a in args])
    assert res.code == 2 and expect in res.err, res.err
    assert len(res.err.strip().splitlines()) == 1


def test_significance_labels():
    assert [significance(p) for p in (0.00001, 0.001, 0.03, 0.2, float("nan"))] == [
        "p < 0.0001", "p < 0.01", "p < 0.05", "n.s.", "n.s."]


def test_a_final_evaluation_beats_the_training_hooks_for_the_same_seed(runs, tmp_path):
    fake_run(runs / "hook-step-100", "gpt2", "ce", 1, {"piqa": 10.0, "arc_easy": 10.0, "mmlu": 10.0})
    stale = runs / "hook-step-100"
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps({**manifest, "training_step": 100}))
    run = run_report(ReportConfig(runs=[str(runs)], output=str(tmp_path / "report"), plots=False))
    v = run.values.set_index(["base_model", "method"])
    assert v.loc[("gpt2", "ce"), "piqa"] == pytest.approx(61.0)   # seed 1's 10.0 from the hook is not used
    assert any("gpt2 / ce / seed 1 was evaluated 2 times" in n for n in run.notes)


def _checkpoint_runs(root, per_seed):
    """(gpt2, ce) and (gpt2, dispersion): seed -> {step: average}, every task at that value."""
    for method, seeds in per_seed.items():
        for seed, steps in seeds.items():
            for step, value in steps.items():
                folder = root / f"{method}-{seed}" / f"step-{step}"
                folder.parent.mkdir(parents=True, exist_ok=True)
                fake_run(folder, "gpt2", method, seed, {t: value + TASKS.index(t) for t in TASKS})
                manifest = json.loads((folder / "manifest.json").read_text())
                (folder / "manifest.json").write_text(json.dumps({**manifest, "training_step": step,
                                                                  "training_run": f"/runs/{method}-{seed}"}))


@pytest.mark.parametrize("select", ["final", "best"])
def test_select_final_or_best_checkpoint_per_seed(tmp_path, run_cli, select):
    per_seed = {"ce": {1: {306: 40.0, 612: 44.0, 1525: 42.0}, 2: {306: 43.0, 612: 41.0, 1525: 41.5}},
                "dispersion": {1: {306: 45.0, 612: 46.0, 1525: 47.0}, 2: {306: 48.0, 612: 44.0, 1525: 46.5}}}
    _checkpoint_runs(tmp_path / "evals", per_seed)
    res = run_cli("report", tmp_path / "evals", "--select", select, "--output", tmp_path / "r", "--no-plots")
    assert res.code == 0, res.err
    values = pd.read_csv(tmp_path / "r" / "table_values.csv").set_index("method")
    for method, seeds in per_seed.items():
        pick = {s: (max(st, key=st.get) if select == "best" else max(st)) for s, st in seeds.items()}
        averages = [seeds[s][pick[s]] + np.mean(range(len(TASKS))) for s in sorted(seeds)]
        assert values.loc[method, "average"] == pytest.approx(np.mean(averages))
        assert values.loc[method, "steps"] == ",".join(str(pick[s]) for s in sorted(seeds))
    table = (tmp_path / "r" / "table.md").read_text()
    assert "| Step |" in table and ("authors' selection" in table) == (select == "best")
    assert ("best checkpoint per seed" in res.out) == (select == "best")
    bad = run_cli("report", tmp_path / "evals", "--select", "median")
    assert bad.code == 2 and "--select" in bad.err


@pytest.mark.parametrize("select, picks", [("best", {1: 0, 2: 612}), ("best-trained", {1: 306, 2: 612}),
                                           ("final", {1: 1526, 2: 1526})])
def test_best_chooses_over_steps_0_to_T_and_best_trained_leaves_step_0_out(tmp_path, select, picks):
    """The authors' GPT-2 maximum includes the evaluation at the start (docs/fidelity.md E6); their
    Qwen3 rows evidently did not (E7): `best-trained`. A base row (no step) is unaffected."""
    per_seed = {"dispersion": {1: {0: 50.0, 306: 45.0, 1526: 44.0}, 2: {0: 40.0, 612: 46.0, 1526: 45.0}}}
    _checkpoint_runs(tmp_path / "evals", per_seed)
    fake_run(tmp_path / "evals" / "base", "gpt2", "base", 1, {t: 30.0 for t in TASKS})
    run = run_report(ReportConfig(runs=[str(tmp_path / "evals")], output=str(tmp_path / "r"), plots=False,
                                  select=select))
    v = run.values.set_index("method")
    assert v.loc["dispersion", "steps"] == ",".join(str(picks[s]) for s in (1, 2))
    assert v.loc["base", "average"] == pytest.approx(30.0)


@pytest.mark.parametrize("method", ["dispersion (lambda=1.0)", "dispersion-torchtitan (lambda=1.0)"])
def test_the_reference_is_found_by_its_loss_name_when_one_row_has_it(tmp_path, method):
    """Qwen3's dispersion row carries lambda 1.0 and Table 5's is dispersion-torchtitan
    (docs/fidelity.md W2, P6): `--reference dispersion` still finds the one such row."""
    root = tmp_path / "evals"
    root.mkdir()
    for m, values in (("ce", (40.0, 41.0, 42.0)), (method, (45.0, 46.0, 47.0))):
        for seed, v in enumerate(values, 1):
            fake_run(root / f"{m}-{seed}", "Qwen/Qwen3-0.6B", m, seed, {t: v for t in TASKS})
    run = run_report(ReportConfig(runs=[str(root)], output=str(tmp_path / "r"), plots=False))
    v = run.values.set_index("method")
    assert v.loc[method, "significance"] == "ref." and v.loc["ce", "significance"] != "—"
    assert v.loc["ce", "p_value"] == pytest.approx(ttest_ind([41.0, 40.0, 42.0], [45.0, 46.0, 47.0]).pvalue)
