"""Every shipped paper config carries the authors' values (docs/fidelity.md T11, E4, L4, B2, B4, M11,
P1-P12, F1): read through the same loader the commands use, and the Makefile's choices read
with `make -n` (a dry run: nothing is executed)."""

import re
import subprocess
from pathlib import Path

import pytest

from lmdisp.config import load_config, read_yaml
from lmdisp.eval.config import load_evaluate_config
from lmdisp.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
MIDTRAIN = sorted(p for p in (REPO / "configs" / "midtrain").glob("*.yaml") if not p.name.startswith("tiny"))
FEW_SHOT = {"arc_easy", "arc_challenge", "medmcqa", "mmlu"}


@pytest.mark.parametrize("path", MIDTRAIN, ids=lambda p: p.name)
def test_midtrain_configs_carry_the_authors_per_model_values(path):
    cfg = load_config(TrainConfig, path)
    qwen3 = path.name.startswith("qwen3")
    # L4, B2: the authors' Qwen3 clamp and NEFTune alpha, in the configs whose loss reads them
    assert cfg.clamp == (0.25 if qwen3 and cfg.loss in ("dispersion", "orthogonalization") else 0.1)
    assert cfg.noise_alpha == (5.0 if qwen3 and cfg.loss == "noisy-embedding" else 1.0)
    assert cfg.context_length == (4096 if qwen3 else 1024)
    assert cfg.eval_points == 5                               # T11: floor(T/5)+1 checkpoints, all kept
    assert cfg.world_tokens_per_step(1) == 131_072 and cfg.train_tokens == 200_000_000
    assert cfg.global_batch == (32 if qwen3 else 128) and cfg.max_steps(8) == 1526   # fidelity T1-T3
    assert cfg.packing == "per-1000"                          # fidelity D2
    assert cfg.allow_repeat                                   # fidelity T12: ~1.7 passes over wikitext
    if qwen3 and cfg.has_regularizer:                             # fidelity W2: midtrain_qwen3.py's default
        assert cfg.lambda_disp == (0.1 if "lambda0.1" in path.name else 1.0)
    assert (cfg.lr, cfg.warmup_ratio, cfg.warmup_steps, cfg.min_lr_ratio) == (5e-5, 0.2, 0, 0.0)
    if cfg.loss == "active-forgetting":                       # B3, B4
        assert (cfg.forget_schedule, cfg.forget_lr, cfg.forget_warmup, cfg.forget_every) == ("authors", 5e-5,
                                                                                             0.08, 1000)
    if "l2-repel" in path.name:                               # L6: the authors' code
        assert cfg.loss == "l2-repel"


def test_eval_presets_per_base_model():
    gpt2, qwen3 = load_evaluate_config("paper"), load_evaluate_config("paper-qwen3")
    assert list(gpt2.tasks) == list(qwen3.tasks) and len(gpt2.tasks) == 10
    assert (gpt2.limit, qwen3.limit) == (500, 200)            # E3, E4
    for cfg, shots in ((gpt2, 1), (qwen3, 5)):
        for task, settings in cfg.tasks.items():
            assert settings["num_fewshot"] == (shots if task in FEW_SHOT else 0), task
            assert settings["metric"] == "acc"


def test_table5_pretraining_recipe():
    """docs/fidelity.md P1-P8: the TorchTitan recipe, data, step count and loss."""
    for loss in ("ce", "dispersion", "dispersion-subsample"):
        cfg = load_config(TrainConfig, REPO / "configs" / "pretrain" / f"qwen3-0.6b-{loss}.yaml",
                          fixed={"init": "scratch"})
        assert (cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio) == (3e-4, 500, 0.1)
        assert cfg.global_batch == 256 and cfg.train_tokens == 10_000_000_000
        for world in (1, 8):
            assert cfg.world_tokens_per_step(world) == 256 * 4096 and cfg.scaled_lr(world) == 3e-4
            assert cfg.max_steps(world) == 9537              # TorchTitan's steps
        assert (cfg.dataset, cfg.doc_tokens, cfg.packing) == ("fineweb-edu-dedup-10b", "bos-eos", "continuous")
    disp = load_config(TrainConfig, REPO / "configs" / "pretrain" / "qwen3-0.6b-dispersion.yaml",
                       fixed={"init": "scratch"})
    assert (disp.loss, disp.lambda_disp, disp.tau, disp.clamp) == ("dispersion-torchtitan", 1.0, 1.0, 0.01)
    assert disp.max_tokens >= disp.context_length            # every position
    assert (cfg.loss, cfg.clamp, cfg.max_tokens) == ("dispersion", 0.01, 256)


@pytest.mark.parametrize("width", [64, 256, 384, 768, 1024, 1536, 3072, 4096])
def test_figure3_recipe_is_the_authors_script_defaults(width):
    path = REPO / "configs" / "pretrain" / f"gpt2-mlp{width}.yaml"
    cfg = load_config(TrainConfig, path, fixed={"init": "scratch"})
    assert (cfg.dataset, cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.warmup_ratio) == (
        "codelion/fineweb-edu-1B", 1e-5, 16, 8, 0.2)
    assert read_yaml(REPO / "configs" / "models" / f"gpt2-mlp{width}.json")["n_inner"] == width


def _dry_run(*args) -> str:
    out = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("model, preset", [("gpt2", "paper"), ("gpt2-medium", "paper"),
                                           ("Qwen/Qwen3-0.6B", "paper-qwen3"), ("Qwen/Qwen3-1.7B", "paper-qwen3")])
def test_table_targets_pick_the_preset_from_model(model, preset):
    out = _dry_run("table2", f"MODEL={model}")
    assert set(re.findall(r"--preset (\S+)", out)) == {preset}
    assert "--checkpoints all" in out and "--select final" in out


def test_every_figure_target_is_the_paper_plan_and_measures_in_float32():
    """make figX is a thin wrapper over `lmdisp paper --only figX` (one source: the plan)."""
    from lmdisp.paper import build_plan

    for fig in ("fig2", "figS2", "fig3", "fig4", "fig5", "fig7"):
        assert re.search(rf"lmdisp paper .*--scale full --only {fig}\b", _dry_run(fig)), fig
    plan = build_plan("full")
    calls = [j.argv for j in plan.jobs.values() if j.kind == "measure"]
    assert calls and all(a[a.index("--dtype") + 1] == "float32" for a in calls)
    fig7 = [j.argv for j in plan.jobs.values() if j.kind == "measure" and "fig7" in j.artefacts]
    assert len(fig7) == 2 and all(a[a.index("--repetitions") + 1] == "10" and
                                  a[a.index("--max-length") + 1] == "1024" for a in fig7)