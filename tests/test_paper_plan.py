"""`lmdisp paper`: the plan (every scale builds, names only configs and options that exist, one
source with the make targets), its resumable state, and the CLI's dry run. Fast: nothing runs."""

import re
import subprocess
from pathlib import Path

import pytest

from lmdisp.paper import build_plan, job_hash
from lmdisp.paper.plan import SCALES, Job, Plan, config_files, placeholders, shipped_path
from lmdisp.paper.state import job_state, mark_done, prepare_folder

REPO = Path(__file__).resolve().parents[1]


def _fill(arg: str) -> list[str]:
    if arg.startswith("{ckpts:"):
        return ["/tmp/run/checkpoints/checkpoint-1", "/tmp/run/final"]
    return [re.sub(r"\{[^{}]+\}", "/tmp/x", arg)]


@pytest.mark.parametrize("scale", SCALES)
def test_every_job_parses_with_its_command_and_names_existing_configs(scale):
    """Each lmdisp command line parses with the real CLI (an unknown option or command fails),
    every --set key is a field of that command's config, every config file exists."""
    import typer.main

    from lmdisp.cli.main import app
    from lmdisp.eval.config import EvaluateConfig
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.paper.steps import parser
    from lmdisp.train.config import TrainConfig

    group = typer.main.get_command(app)
    fields = {"measure": MeasureConfig, "evaluate": EvaluateConfig, "midtrain": TrainConfig,
              "pretrain": TrainConfig, "distill": TrainConfig}
    plan = build_plan(scale)
    for job in plan.jobs.values():
        args = [a for arg in job.args for a in _fill(arg)]
        if job.argv[0] == "lmdisp.paper.steps":
            parser().parse_args(args)
            continue
        cmd = group.get_command(None, job.argv[0])
        assert cmd is not None, job.id
        cmd.make_context(job.argv[0], list(args[1:]))  # raises on an unknown option
        for i, a in enumerate(args):
            if a == "--set":
                key = args[i + 1].split("=")[0]
                assert key in fields[job.argv[0]].__dataclass_fields__, (job.id, key)
            if a.startswith("configs/"):
                assert shipped_path(a).is_file(), (job.id, a)


def test_full_plan_covers_the_paper_at_its_scope():
    plan = build_plan("full")
    assert plan.artefacts() == ["fig2", "figS2", "fig3", "fig4", "fig5", "fig7", "table2", "table3", "table4",
                                "table5"]
    measured = lambda jid: [a for a in plan.jobs[jid].argv if not a.startswith("--") and "/" in a or a.startswith("gpt2")]  # noqa: E731
    fam = {j.id: j for j in plan.jobs.values() if j.id.startswith("fig2/measure-")}
    assert sorted(fam) == ["fig2/measure-bloom", "fig2/measure-gpt2", "fig2/measure-qwen1", "fig2/measure-qwen25",
                           "fig2/measure-qwen3"]
    assert "Qwen/Qwen3-32B" in fam["fig2/measure-qwen3"].argv and "--trust-remote-code" in fam["fig2/measure-qwen1"].argv
    assert {j.argv[j.argv.index("--dataset") + 1] for j in plan.jobs.values() if "figS2" in j.artefacts
            and j.kind == "measure"} == {"wikipedia", "pubmed", "imdb", "squad"}
    assert all("gpt2-xl" in plan.jobs[f"figS2/measure-{c}"].argv for c in ("pubmed", "squad"))
    olmo = [a for a in plan.jobs["fig4/measure"].argv if a.startswith("allenai/Olmo-3-1025-7B@")]
    assert len(olmo) == 13 and olmo[0].endswith("@stage1-step0") and olmo[-1].endswith("@main")
    assert len(measured("fig5/measure")) == 8
    widths = [j.argv[j.argv.index("--config") + 1] for j in plan.jobs.values() if j.id.startswith("fig3/pretrain")]
    assert widths == [f"configs/pretrain/gpt2-mlp{w}.yaml" for w in (64, 256, 1024, 4096)]
    assert plan.jobs["fig3/measure"].argv[plan.jobs["fig3/measure"].argv.index("--max-length") + 1] == "1024"
    assert set(plan.jobs["fig7/measure-dispersion"].deps) == {"table4/gpt2/dispersion-lambda1.0-seed1"}
    assert plan.jobs["table2/gpt2/ce-seed1"].gpu_hours == 1.122  # the paper's own A100 hours
    assert plan.jobs["table2/gpt2/dispersion-seed2"].gpu_hours == 1.176
    assert plan.jobs["table2/gpt2/eval-ce-seed1"].cost_source.startswith("estimate")
    select = lambda jid: plan.jobs[jid].argv[plan.jobs[jid].argv.index("--select") + 1]  # noqa: E731
    # E7: GPT-2's maximum includes step 0 (--eval_at_begin), the authors' Qwen3 runs never evaluated it
    assert select("table2/gpt2/report") == "best" and select("table2/qwen3-0.6b/report") == "best-trained"


@pytest.mark.parametrize("table", ["table2", "table3", "table4"])
def test_table_jobs_name_the_same_configs_as_the_make_targets(table):
    """One source: `make plan TABLE=...` (what `make table2` trains) and the paper plan agree."""
    plan = build_plan("full")
    for model in (["gpt2", "gpt2-medium", "qwen3-0.6b", "qwen3-1.7b"] if table == "table2" else ["gpt2"]):
        out = subprocess.run(["make", "-s", "-C", str(REPO), "plan", f"TABLE={table}", f"MODEL={model}"],
                             capture_output=True, text=True, check=True).stdout
        make = {(c, s) for c, s in re.findall(r"--config (\S+) --seed (\d+)", out)}
        mine = {(j.argv[j.argv.index("--config") + 1], j.argv[j.argv.index("--seed") + 1])
                for j in plan.jobs.values() if table in j.artefacts and j.kind == "train"
                and j.id.split("/")[1] == model}
        assert make and make == mine, (model, make ^ mine)


def test_selection_takes_dependencies_and_refuses_unknown_names():
    plan = build_plan("full")
    ids = [j.id for j in plan.select(["fig7"])]
    assert ids.index("table2/gpt2/ce-seed1") < ids.index("fig7/measure-ce") < ids.index("fig7/figure")
    assert not any(i.startswith("table3/") for i in ids)
    from lmdisp.errors import ConfigError

    with pytest.raises(ConfigError, match="--only fig9: not an artefact.*fig7"):
        plan.select(["fig9"])


def _tiny_plan(root: Path, config: Path, resumable: bool = False) -> Plan:
    jobs = [Job("a", "train" if resumable else "measure",
                ["midtrain" if resumable else "measure", "--config", str(config), "--output", "{out}"], ["fig3"]),
            Job("b", "figure", ["lmdisp.paper.steps", "figure", "widths", "--output", "{out}", "{dep:a}"], ["fig3"],
                ["a"])]
    return Plan("smoke", root, {j.id: j for j in jobs})


def test_state_skips_complete_jobs_sets_changed_ones_aside_and_resumes_training(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1\n")
    plan = _tiny_plan(tmp_path / "plan", config)
    a = plan.jobs["a"]
    assert job_state(plan, a).status == "new" and config in config_files(a.argv)
    state = job_state(plan, a)
    prepare_folder(plan, state)
    plan.output(a).mkdir()  # the command makes its --output folder
    (plan.output(a) / "result.txt").write_text("old")
    assert job_state(plan, a).status == "aside"  # started, never finished, not resumable
    mark_done(plan, state, 1.0, {})
    assert job_state(plan, a).status == "done"
    before, b_before = job_hash(a), job_hash(plan.jobs["b"], plan)
    config.write_text("lr: 2\n")  # the config changed on disk: the hash changes, the job reruns
    assert job_hash(a) != before
    assert job_hash(plan.jobs["b"], plan) != b_before  # and so does what is made from its output
    changed = job_state(plan, a)
    assert changed.status == "aside" and "config changed" in changed.note
    prepare_folder(plan, changed)
    kept = list((tmp_path / "plan").glob("a.old-*"))
    assert len(kept) == 1 and (kept[0] / "result.txt").read_text() == "old"
    assert not plan.output(a).exists() or not any(plan.output(a).iterdir())  # never mixed
    train = _tiny_plan(tmp_path / "train", config, resumable=True)
    st = job_state(train, train.jobs["a"])
    prepare_folder(train, st)
    (train.output("a") / "checkpoints").mkdir(parents=True)
    assert job_state(train, train.jobs["a"]).status == "resume"


def test_placeholders_must_name_dependencies(tmp_path):
    from lmdisp.errors import ConfigError

    assert placeholders(["{dep:a}/final", "x", "{ckpts:b}"]) == ["dep:a", "ckpts:b"]
    with pytest.raises(ConfigError, match="not one of its dependencies"):
        Plan("smoke", tmp_path, {"a": Job("a", "figure", ["measure", "{dep:z}"], ["fig3"])})


def test_dry_run_prints_every_job_with_command_dependencies_and_cost(run_cli, tmp_path):
    res = run_cli("paper", "--scale", "full", "--only", "fig7", "--dry-run", "--output", tmp_path)
    assert res.code == 0, res.err
    assert "lmdisp midtrain --config configs/midtrain/gpt2-dispersion-lambda1.0.yaml --seed 1" in res.out
    assert "needs: table2/gpt2/ce-seed1" in res.out
    assert "1.122 GPU-h (paper Table 2 (A100 hours))" in res.out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    bad = run_cli("paper", "--scale", "huge", "--dry-run")
    assert bad.code == 2 and "--scale huge: choose one of full, mini, smoke" in bad.err
    assert "Traceback" not in bad.err


def test_gpu_packing_runs_jobs_on_their_own_gpus_after_their_dependencies(tmp_path):
    """The GPU executor (subprocess per job, CUDA_VISIBLE_DEVICES from the free pool); the jobs here
    are the plan's own CPU step, so it runs anywhere."""
    from lmdisp.paper.cluster import run_packed
    from lmdisp.paper.state import read_marker

    step = lambda jid, deps=(): Job(jid, "prepare", ["lmdisp.paper.steps", "tasks", "--output", "{out}", "--limit",  # noqa: E731
                                                     "4"], ["table2"], list(deps), gpus=1)
    plan = Plan("smoke", tmp_path, {j.id: j for j in (step("a"), step("b"), step("c", ["a", "b"]))})
    seen = []
    outcome = run_packed(plan, plan.order(), ["0", "1"], lambda what, job, d: seen.append((what, job.id)))
    assert outcome.ok and sorted(outcome.done) == ["a", "b", "c"], outcome
    finished = {j: read_marker(plan, plan.jobs[j], "done")["finished"] for j in "abc"}
    assert read_marker(plan, plan.jobs["c"], "started")["started"] >= max(finished["a"], finished["b"])
    assert (tmp_path / "c" / "preset.yaml").is_file()
    again = run_packed(plan, plan.order(), ["0", "1"])
    assert sorted(again.skipped) == ["a", "b", "c"] and not again.done


def test_trend_claim_uses_kendall_of_rho_and_falls_back_to_the_last_layer_when_rho_saturates(tmp_path):
    import pandas as pd
    from scipy.stats import kendalltau

    from lmdisp.paper.claims import Claim, _trend_claim

    csv = tmp_path / "models.csv"
    pd.DataFrame({"model": ["a", "b", "c", "d"], "mean_cos_last": [0.9, 0.8, 0.7, 0.5]}).to_csv(csv, index=False)
    pts = lambda rho: [{"model": m, "label": m, "spearman_rho": r, "source": str(csv)} for m, r in zip("abcd", rho)]  # noqa: E731
    falling = _trend_claim(Claim("k", "p"), pts([0.9, 0.7, 0.8, 0.2]), csv, "w", "mini", "widths")
    tau = kendalltau(range(4), [0.9, 0.7, 0.8, 0.2])
    assert falling.verdict == "supported" and f"Kendall τ of ρ vs order {tau.statistic:+.3f}" in falling.text()
    assert f"p = {tau.pvalue:.3g}" in falling.text() and "a change of -0.700" in falling.text()
    flat = _trend_claim(Claim("k", "p"), pts([1.0] * 4), csv, "w", "mini", "widths")
    assert flat.verdict == "supported" and "last layer's mean cosine decides: 0.900 to 0.500" in flat.text()
    rising = _trend_claim(Claim("k", "p"), pts([0.1, 0.5, 0.6, 0.9]), csv, "w", "mini", "widths")
    assert rising.verdict == "not supported" and rising.text().endswith("not supported at mini scale.")


def test_a_training_run_folder_gives_its_final_models_tokenizer(tmp_path, tiny_gpt2_dir):
    """`lmdisp measure RUN` (a run folder, as MeasureConfig documents) loads the tokenizer of RUN/final;
    the paper plans pass RUN/final, but a user passes RUN."""
    import shutil

    from lmdisp.models import load_tokenizer
    from lmdisp.runfolder import TrainingRun

    run = tmp_path / "run"
    shutil.copytree(tiny_gpt2_dir, run / "final")
    TrainingRun.mark(run, "midtrain")  # what a run writes when it makes its folder
    assert len(load_tokenizer(str(run))) == len(load_tokenizer(str(run / "final")))


def test_a_comparison_of_nearly_identical_seeds_is_quiet(tmp_path):
    """Tied tiny models give seed averages equal up to rounding: scipy's precision warning must not
    reach the terminal of `lmdisp paper` (it printed three times after the mini report)."""
    import warnings

    import pandas as pd

    from lmdisp.eval.report import t_test
    from lmdisp.paper.claims import Claim, compare

    a, b = "41.666666666666664,41.66666666666667", "42.22222222222222,42.22222222222223"
    table = pd.DataFrame({"base_model": ["m", "m"], "method": ["ce", "dispersion"], "seed_averages": [a, b]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        claim = compare(Claim("k", "p"), table, tmp_path / "t.csv", "ce", "dispersion", "mini", "dispersion")
        p = t_test([42.22222222222222, 42.22222222222223], [41.666666666666664, 41.66666666666667], equal_var=False)
    assert claim.verdict in ("supported", "same direction, not significant") and "(difference +0.56 points" in claim.text()
    assert (f"Welch p = {p:.3g}" in claim.text()) if p == p else "no spread over seeds" in claim.text()
