"""`lmdisp evaluate` on small local tasks (YAML + JSONL written here): lmdisp's numbers are
lm-eval's own, the paper preset, training run folders, the training hook, clear errors."""

import json
import random
import shutil

import pandas as pd
import pytest
import yaml

from lmdisp.eval.config import EvaluateConfig, load_evaluate_config
from lmdisp.eval.harness import evaluate_in_training, run_evaluate

WORDS = "red blue green cat dog sun moon tree river stone bird fish".split()
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
            "Peru": "Lima", "Chile": "Santiago", "Kenya": "Nairobi", "Cuba": "Havana", "Iran": "Tehran",
            "Iraq": "Baghdad", "Greece": "Athens"}
SEEDS = dict(random_seed=3, numpy_random_seed=3, torch_random_seed=3, fewshot_random_seed=3)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_tasks(folder):
    """toy_mc (multiple choice), toy_ll (loglikelihood), toy_gen (generation), toy_group (both scored)."""
    rng = random.Random(0)
    mc = []
    for i in range(16):
        choices = rng.sample(WORDS, 4)
        mc.append({"question": f"Which word comes {['first', 'second', 'third', 'last'][i % 4]} in "
                               f"{', '.join(choices)}?", "choices": choices, "label": i % 4})
    ll = [{"context": f"The capital of {c} is", "answer": a} for c, a in CAPITALS.items()]
    data = {"mc": _jsonl(folder / "mc.jsonl", mc), "ll": _jsonl(folder / "ll.jsonl", ll)}
    common = lambda name, d: {"task": name, "dataset_path": "json", "test_split": "test", "fewshot_split": "test",
                              "dataset_kwargs": {"data_files": {"test": str(data[d])}}, "metadata": {"version": 1.0}}
    tasks = {
        "toy_mc": {**common("toy_mc", "mc"), "output_type": "multiple_choice",
                   "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
                   "doc_to_target": "label",
                   "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                   for m in ("acc", "acc_norm")]},
        "toy_ll": {**common("toy_ll", "ll"), "output_type": "loglikelihood", "doc_to_text": "{{context}}",
                   "doc_to_target": "{{' ' + answer}}",
                   "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                   {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
        "toy_gen": {**common("toy_gen", "ll"), "output_type": "generate_until", "doc_to_text": "{{context}}",
                    "doc_to_target": "{{' ' + answer}}", "generation_kwargs": {"until": ["\n"], "max_gen_toks": 32},
                    "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]},
    }
    for name, cfg in tasks.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "toy_group.yaml").write_text(yaml.safe_dump({
        "group": "toy_group", "task": ["toy_mc", "toy_ll"], "metadata": {"version": 1.0},
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}))
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def preset(task_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "include_path": str(task_dir), "limit": 6, "gen_kwargs": "do_sample=False,max_gen_toks=4",
        "tasks": {"toy_mc": {"num_fewshot": 1, "metric": "acc_norm"}, "toy_ll": {"num_fewshot": 0, "metric": "acc"},
                  "toy_gen": {"num_fewshot": 0, "metric": "exact_match"}}}))
    return path


def _direct(lm, task_dir, tasks, limit, **kw):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    return simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=tm, log_samples=False, **SEEDS, **kw)


def _assert_same(run_path, direct, tasks):
    """Every number lmdisp wrote (tasks.csv and metrics.csv) is lm-eval's, times 100 for fractions."""
    table, metrics = pd.read_csv(run_path / "tasks.csv"), pd.read_csv(run_path / "metrics.csv")
    assert list(table["task"]) == tasks
    for row in table.itertuples():
        assert row.value == pytest.approx(direct["results"][row.task][f"{row.metric},none"] * 100, rel=1e-9)
        assert row.n == sum(v["effective"] for t, v in direct["n-samples"].items()
                            if t == row.task or t in direct["group_subtasks"].get(row.task, []))
    assert len(metrics) > len(table)
    for row in metrics.itertuples():
        scale = 100 if row.unit == "%" else 1
        assert row.value == pytest.approx(direct["results"][row.task][f"{row.metric},{row.filter}"] * scale, rel=1e-9)


def test_local_folder_equals_simple_evaluate(tiny_gpt2_dir, task_dir, tmp_path):
    tasks = ["toy_group", "toy_gen"]  # the group's subtasks toy_mc and toy_ll land in metrics.csv
    run = run_evaluate(EvaluateConfig(model=str(tiny_gpt2_dir), tasks=tasks, include_path=str(task_dir), limit=8,
                                      seed=3, device="cpu", output=str(tmp_path / "run")))
    direct = _direct("hf", task_dir, tasks, 8, model_args={"pretrained": str(tiny_gpt2_dir), "dtype": "float32"},
                     device="cpu", batch_size=8)
    _assert_same(run.path, direct, tasks)
    group = run.table.set_index("task").loc["toy_group"]
    assert group["n"] == 16 and group["metric"] == "acc" and group["n_shot"] == 0
    ppl = run.metrics[(run.metrics["task"] == "toy_ll") & (run.metrics["metric"] == "perplexity")].iloc[0]
    assert ppl["unit"] == "" and ppl["value"] > 1          # perplexity is not a percentage
    assert run.manifest["labels"] == {"base_model": str(tiny_gpt2_dir), "method": "base", "seed": 3}


def test_cli_random_model_equals_in_memory_simple_evaluate(run_cli, task_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    from lmdisp.models import load_model

    out = tmp_path / "run"
    res = run_cli("evaluate", "--model", "random:tiny-gpt2", "--tasks", "toy_mc,toy_ll", "--include-path", task_dir,
                  "--limit", "8", "--seed", "3", "--log-samples", "--output", out)
    assert res.code == 0, res.err
    assert "toy_mc" in res.out and "acc" in res.out and str(out) in res.out.replace("\n", "")
    for name in ("lm_eval_results.json", "tasks.csv", "tasks.md", "metrics.csv", "metrics.md", "manifest.json"):
        assert (out / name).is_file(), name
    assert len((out / "samples" / "toy_mc.jsonl").read_text().splitlines()) == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["model"] == "random:tiny-gpt2" and manifest["wall_time_s"] > 0
    assert manifest["model_info"]["batch_size"] == 8 and "lm_eval" in manifest["versions"]
    raw = json.loads((out / "lm_eval_results.json").read_text())
    assert raw["n-samples"]["toy_mc"]["effective"] == 8 and "samples" not in raw
    loaded = load_model("random:tiny-gpt2", lm_head=True, device="cpu", seed=3)
    direct = _direct(HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8), task_dir,
                     ["toy_mc", "toy_ll"], 8)
    _assert_same(out, direct, ["toy_mc", "toy_ll"])


def test_preset_per_task_shots_metric_and_gen_kwargs(preset, tmp_path):
    cfg = load_evaluate_config(str(preset), {"model": "random:tiny-gpt2", "output": str(tmp_path / "run")})
    run = run_evaluate(cfg)
    table = run.table.set_index("task")
    assert table.loc["toy_mc", "n_shot"] == 1 and table.loc["toy_mc", "metric"] == "acc_norm"
    assert table.loc["toy_ll", "n_shot"] == 0 and table.loc["toy_ll", "metric"] == "acc"
    assert table.loc["toy_gen", "metric"] == "exact_match" and (table["limit"] == 6).all() and (table["n"] == 6).all()
    raw = json.loads((run.path / "lm_eval_results.json").read_text())
    assert sorted(c["num_fewshot"] for c in raw["lmdisp_calls"]) == [0, 1]   # one simple_evaluate per n-shot
    gen = raw["configs"]["toy_gen"]["generation_kwargs"]
    assert gen["max_gen_toks"] == 4 and gen["do_sample"] is False
    # a subset of the preset keeps its settings; --num-fewshot overrides every task
    sub = load_evaluate_config(str(preset), {"tasks": "toy_mc"})
    assert sub.tasks == {"toy_mc": {"num_fewshot": 1, "metric": "acc_norm"}} and sub.limit == 6


def test_paper_preset_and_every_eval_config_parses():
    from lmdisp.config import packaged

    cfg = load_evaluate_config("paper")
    shots = {t: s["num_fewshot"] for t, s in cfg.tasks.items()}
    assert sorted(t for t, n in shots.items() if n == 0) == sorted(
        ["anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande"])
    assert sorted(t for t, n in shots.items() if n == 1) == sorted(["arc_easy", "arc_challenge", "medmcqa", "mmlu"])
    assert cfg.limit == 500 and all(s["metric"] for s in cfg.tasks.values())
    assert "do_sample=False" in cfg.gen_kwargs and "max_gen_toks=256" in cfg.gen_kwargs
    presets = [p for p in packaged("eval").iterdir() if p.name.endswith(".yaml")]
    assert presets
    for path in presets:
        load_evaluate_config(str(path))


def _fake_training_run(folder, final_from, **overrides):
    folder.mkdir()
    config = {"model": "random:tiny-gpt2", "loss": "dispersion", "seed": 3, "lambda_disp": 0.5, "tau": 1.0,
              "location": "all", "init": "pretrained", **overrides}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    from lmdisp.train.config import TrainConfig
    from lmdisp.train.run import train_labels

    labels = train_labels(TrainConfig(**{k: v for k, v in config.items() if k != "init"}, init=config["init"]))
    (folder / "manifest.json").write_text(json.dumps({"labels": labels}))
    if final_from:
        shutil.copytree(final_from, folder / "final")
    return folder


def test_method_labels_name_what_differs_from_the_paper_defaults():
    from lmdisp.errors import LmdispError
    from lmdisp.train.config import TrainConfig

    def method_label(settings):
        return TrainConfig(**settings).method_label()

    assert method_label({"loss": "dispersion", "lambda_disp": 0.1, "tau": 1.0, "location": "all"}) == "dispersion"
    assert method_label({"loss": "dispersion", "tau": 0.5, "location": "late_half"}) == \
        "dispersion (tau=0.5, location=late_half)"
    with pytest.raises(LmdispError, match="does nothing with --loss ce"):  # ce has no lambda: refused
        method_label({"loss": "ce", "lambda_disp": 0.5})
    assert method_label({"loss": "ce", "teacher": "gpt2-medium"}) == "ce (KD from gpt2-medium)"


def test_training_run_folder_resolves_to_final_with_labels(run_cli, tiny_gpt2_dir, task_dir, tmp_path):
    run = _fake_training_run(tmp_path / "midtrain-run", tiny_gpt2_dir)
    res = run_cli("evaluate", "--model", run, "--tasks", "toy_mc", "--include-path", task_dir, "--limit", "4",
                  "--output", tmp_path / "ev")
    assert res.code == 0, res.err
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    assert manifest["labels"] == {"base_model": "random:tiny-gpt2", "method": "dispersion (lambda=0.5)", "seed": 3}
    assert manifest["seed"] == 3 and manifest["training_run"] == str(run)
    assert manifest["model_info"]["location"] == str((run / "final").resolve())
    broken = _fake_training_run(tmp_path / "no-final", None)
    res = run_cli("evaluate", "--model", broken, "--tasks", "toy_mc", "--include-path", task_dir)
    assert res.code == 2 and "without a final/ model" in res.err and len(res.err.strip().splitlines()) == 1


def test_evaluate_in_training_restores_mode_and_rng(preset, task_dir, tmp_path):
    import numpy as np
    import torch

    from lmdisp.models import load_model

    run = _fake_training_run(tmp_path / "run", None, loss="ce", seed=5, lambda_disp=0.1)
    loaded = load_model("random:tiny-gpt2", lm_head=True, device="cpu")
    loaded.model.train()
    torch.manual_seed(123)
    np.random.seed(123)
    out = evaluate_in_training(loaded.model, loaded.tokenizer, str(preset), run / "evals" / "step-0")
    after = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(after[0], torch.rand(3)) and np.array_equal(after[1], np.random.rand(3))
    assert loaded.model.training
    assert out.path == run / "evals" / "step-0" and (out.path / "tasks.csv").is_file()
    assert out.manifest["labels"] == {"base_model": "random:tiny-gpt2", "method": "ce", "seed": 5}
    assert out.manifest["training_step"] == 0 and out.manifest["seed"] == 5
    # a comma list works too; a folder that holds results is never overwritten: a sibling
    again = evaluate_in_training(loaded.model, loaded.tokenizer, "toy_mc", run / "evals" / "step-0",
                                 include_path=str(task_dir), limit=2)
    assert again.path.name == "step-0-2" and list(again.table["task"]) == ["toy_mc"]


@pytest.mark.parametrize("args, expect", [
    (["--tasks", "toy_mc", "--model", "no-such-org/no-such-model"], "cannot load model"),
    (["--tasks", "toy_mc", "--backend", "vllm"], "vllm"),
    (["--tasks", "toy_mc", "--limit", "0"], "--limit"),
    (["--tasks", "toy_mc", "--batch-size", "many"], "--batch-size"),
    (["--model", "random:tiny-gpt2"], "--tasks"),
    (["--tasks", "toy_mc", "--preset", "no-such-preset"], "--preset"),
])
def test_cli_errors_are_one_line(run_cli, task_dir, args, expect):
    res = run_cli("evaluate", "--include-path", task_dir, *args)
    assert res.code == 2 and expect in res.err, res.err
    assert len(res.err.strip().splitlines()) == 1 and res.err.startswith("error:")


def test_cli_unknown_task_and_unloadable_model(run_cli, task_dir, tmp_path):
    res = run_cli("evaluate", "--model", "random:tiny-gpt2", "--tasks", "toy_mc,arc_esy", "--include-path", task_dir)
    assert res.code == 2 and "unknown task(s) `arc_esy` (did you mean arc_easy" in res.err
    assert len(res.err.strip().splitlines()) == 1
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    res = run_cli("evaluate", "--model", broken, "--tasks", "toy_mc", "--include-path", task_dir)
    assert res.code == 2 and "cannot load model" in res.err and len(res.err.strip().splitlines()) == 1


def test_evaluations_feed_the_report(run_cli, task_dir, tmp_path):
    (tmp_path / "evals").mkdir()
    for method in ("ce", "dispersion"):
        for seed in (1, 2):
            res = run_cli("evaluate", "--model", "random:tiny-gpt2", "--tasks", "toy_mc,toy_ll", "--include-path",
                          task_dir, "--limit", "6", "--seed", seed, "--base-model", "tiny", "--method", method,
                          "--output", tmp_path / "evals" / f"{method}-{seed}")
            assert res.code == 0, res.err
    res = run_cli("report", tmp_path / "evals", "--output", tmp_path / "report")
    assert res.code == 0, res.err
    values = pd.read_csv(tmp_path / "report" / "table_values.csv").set_index("method")
    per_run = {(m, s): pd.read_csv(tmp_path / "evals" / f"{m}-{s}" / "tasks.csv").set_index("task")["value"]
               for m in ("ce", "dispersion") for s in (1, 2)}
    for m in ("ce", "dispersion"):
        assert values.loc[m, "toy_mc"] == pytest.approx((per_run[(m, 1)]["toy_mc"] + per_run[(m, 2)]["toy_mc"]) / 2)
    assert values.loc["dispersion", "significance"] == "ref."


@pytest.mark.slow
def test_bundled_model_equals_simple_evaluate(task_dir, tmp_path):
    from lmdisp.models import alias_path, gguf_to_folder

    run = run_evaluate(EvaluateConfig(tasks="toy_mc,toy_ll", include_path=str(task_dir), limit=4, seed=3,
                                      device="cpu", output=str(tmp_path / "run")))
    folder = gguf_to_folder(alias_path("smollm2-135m"))
    direct = _direct("hf", task_dir, ["toy_mc", "toy_ll"], 4, model_args={"pretrained": str(folder),
                                                                           "dtype": "float32"},
                     device="cpu", batch_size=8)
    _assert_same(run.path, direct, ["toy_mc", "toy_ll"])
    assert run.manifest["model"] == "smollm2-135m" and run.manifest["model_info"]["source"] == "alias"


def test_training_evaluates_at_begin_every_n_steps_and_end(run_cli, task_dir, tmp_path):
    """The midtrain hook goes through this module (local tasks via eval_include_path), at step 0,
    every 2 steps and at the end, and each evaluation scores the weights of its own step: the
    perplexity changes from step to step and equals what `lmdisp evaluate --checkpoints all`
    gives the checkpoint of that step."""
    res = run_cli("midtrain", "--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32",
                  "--batch-size", "4", "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "0",
                  "--train-tokens", str(5 * 128), "--output", tmp_path / "run", "--set", "eval_tasks=toy_ll",
                  "--set", f"eval_include_path={task_dir}", "--set", "eval_every=2", "--set", "eval_limit=6",
                  "--save-steps", "2", "--set", "save_total_limit=2", "--report-to", "tensorboard")
    assert res.code == 0, res.err
    evals = sorted(p.name for p in (tmp_path / "run" / "evals").iterdir())
    assert evals == ["step-0", "step-2", "step-4", "step-5"]
    args = ["--tasks", "toy_ll", "--include-path", task_dir, "--limit", "6"]
    res = run_cli("evaluate", "--model", tmp_path / "run", "--checkpoints", "all", *args, "--output", tmp_path / "ev")
    assert res.code == 0, res.err
    metrics = lambda folder: pd.read_csv(folder / "metrics.csv")[["task", "metric", "value", "n"]]  # noqa: E731
    hook = {name: metrics(tmp_path / "run" / "evals" / name) for name in evals}
    perplexity = [t.set_index("metric").loc["perplexity", "value"] for t in hook.values()]
    assert len(set(perplexity)) == 4, perplexity  # every step scored different weights
    for step in ("step-4", "step-5"):  # the checkpoints kept (save_total_limit 2)
        pd.testing.assert_frame_equal(hook[step], metrics(tmp_path / "ev" / step), rtol=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    for name in evals:  # the integrations get the same score as tasks.csv
        row = pd.read_csv(tmp_path / "run" / "evals" / name / "tasks.csv").set_index("task").loc["toy_ll"]
        logged = {e.step: e.value for e in acc.Scalars(f"benchmark/toy_ll/{row['metric']}")}
        assert logged[int(name.split("-")[1])] == pytest.approx(row["value"], rel=1e-6)


def test_checkpoints_all_evaluates_every_kept_checkpoint(run_cli, task_dir, tmp_path):
    """eval_points=2 keeps checkpoints at floor(5/2)+1 = 3 and 5 (the end); `--checkpoints all`
    evaluates each, labelled with its step; the last one scores exactly as final/ does."""
    res = run_cli("midtrain", "--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32",
                  "--batch-size", "4", "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "0",
                  "--train-tokens", str(5 * 128), "--output", tmp_path / "run", "--set", "eval_points=2",
                  "--set", "save_total_limit=1")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-5"]
    args = ["--tasks", "toy_mc", "--include-path", task_dir, "--limit", "6"]
    res = run_cli("evaluate", "--model", tmp_path / "run", "--checkpoints", "all", *args, "--output", tmp_path / "ev")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["lmdisp.log", "step-0", "step-3", "step-5"]
    manifests = {s: json.loads((tmp_path / "ev" / f"step-{s}" / "manifest.json").read_text()) for s in (0, 3, 5)}
    assert [manifests[s]["training_step"] for s in (0, 3, 5)] == [0, 3, 5]
    assert all(m["labels"]["method"] == "ce" and m["labels"]["seed"] == 1 for m in manifests.values())
    assert all(m["labels"]["base_model"] == "random:tiny-gpt2" for m in manifests.values())
    assert (manifests[0]["model"], manifests[0]["seed"]) == ("random:tiny-gpt2", 1)
    final = run_cli("evaluate", "--model", tmp_path / "run", *args, "--output", tmp_path / "final")
    assert final.code == 0, final.err
    scores = [pd.read_csv(tmp_path / d / "tasks.csv")["value"].tolist() for d in ("ev/step-5", "final")]
    assert scores[0] == scores[1]
    # Step 0 is the starting model at the run's seed (fidelity E6): the same scores as evaluating it directly.
    start = run_cli("evaluate", "--model", "random:tiny-gpt2", "--seed", "1", *args, "--output", tmp_path / "start")
    assert start.code == 0, start.err
    assert pd.read_csv(tmp_path / "ev" / "step-0" / "tasks.csv")["value"].tolist() == \
        pd.read_csv(tmp_path / "start" / "tasks.csv")["value"].tolist()
    trained = run_cli("evaluate", "--model", tmp_path / "run", "--checkpoints", "trained", *args,
                      "--output", tmp_path / "tr")
    assert trained.code == 0 and sorted(p.name for p in (tmp_path / "tr").iterdir()) == ["lmdisp.log", "step-3",
                                                                                          "step-5"]
    again = run_cli("evaluate", "--model", tmp_path / "run", "--checkpoints", "all", *args, "--output", tmp_path / "ev")
    assert again.code == 0 and f"all 3 checkpoint(s) already evaluated in {tmp_path / 'ev'} (steps 0, 3, 5); nothing " \
        "to do" in " ".join(again.out.split())  # done: skipped, and said so
    bad = run_cli("evaluate", "--model", tmp_path / "run" / "final", "--checkpoints", "all", *args)
    assert bad.code == 2 and "not a training run folder" in bad.err and "Traceback" not in bad.err
    typo = run_cli("evaluate", "--model", tmp_path / "run", "--checkpoints", "all", "--tasks", "toy_mcc",
                   "--include-path", task_dir, "--output", tmp_path / "typo")
    assert typo.code == 2 and "toy_mcc" in typo.err and not (tmp_path / "typo").exists()


def test_eval_points_evaluates_at_the_authors_interval(run_cli, task_dir, tmp_path):
    """eval_points=2 with eval_tasks and no eval_every: the hook runs at begin, every
    floor(5/2)+1 = 3 steps and at the end (the authors' periodic evaluation points)."""
    res = run_cli("midtrain", "--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32",
                  "--batch-size", "4", "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "0",
                  "--train-tokens", str(5 * 128), "--output", tmp_path / "run", "--set", "eval_tasks=toy_mc",
                  "--set", f"eval_include_path={task_dir}", "--set", "eval_points=2", "--set", "eval_limit=4")
    assert res.code == 0, res.err
    assert sorted(p.name for p in (tmp_path / "run" / "evals").iterdir()) == ["step-0", "step-3", "step-5"]


def test_perplexity_stderr_bootstrapped_without_forking(tiny_gpt2_dir, task_dir, tmp_path, monkeypatch):
    """lm-eval bootstraps perplexity's stderr in a forked Pool, which hung an evaluation in CI: lmdisp
    draws the same resamples in-process (lm-eval's DISABLE_MULTIPROC), and no Pool is ever made."""
    import multiprocessing
    import os
    import subprocess
    import sys

    def no_pool(*a, **k):
        raise AssertionError("a multiprocessing.Pool was forked during the evaluation")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    monkeypatch.delenv("DISABLE_MULTIPROC", raising=False)
    run = run_evaluate(EvaluateConfig(model=str(tiny_gpt2_dir), tasks=["toy_ll"], include_path=str(task_dir),
                                      limit=6, seed=3, device="cpu", output=str(tmp_path / "run")))
    assert "DISABLE_MULTIPROC" not in os.environ  # put back as found
    raw = json.loads((run.path / "lm_eval_results.json").read_text())["results"]["toy_ll"]
    assert raw["perplexity_stderr,none"] > 0
    # lm-eval's pooled bootstrap, in a fresh process, gives the same stderr for the same inputs
    code = ("import math, random; from lm_eval.api.metrics import bootstrap_stderr, perplexity\n"
            "xs = [-random.Random(7).random() * (i + 1) for i in range(6)]\n"
            "print(repr(bootstrap_stderr(perplexity, xs, 3000)))")
    env = {k: v for k, v in os.environ.items() if k != "DISABLE_MULTIPROC"}
    pooled = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    single = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "DISABLE_MULTIPROC": "1"}, check=True)
    assert float(pooled.stdout.splitlines()[-1]) == float(single.stdout.splitlines()[-1])
