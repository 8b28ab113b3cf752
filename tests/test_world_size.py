"""Paper presets keep the paper's optimisation on any number of processes (docs/fidelity.md
T1-T3): the global batch and LR stay, the micro-batch x accumulation adapt, T = ceil."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmdisp.config import load_config
from lmdisp.errors import ConfigError
from lmdisp.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
GPT2 = REPO / "configs" / "midtrain" / "gpt2-dispersion.yaml"
QWEN3 = REPO / "configs" / "midtrain" / "qwen3-0.6b-dispersion.yaml"


@pytest.mark.parametrize("world, plan", [(1, (32, 4)), (2, (32, 2)), (4, (32, 1)), (8, (16, 1)), (128, (1, 1))])
def test_gpt2_preset_keeps_128_sequences_and_lr_on_any_world(world, plan):
    cfg = load_config(TrainConfig, GPT2)
    assert cfg.batch_plan(world) == plan
    assert cfg.world_tokens_per_step(world) == 128 * 1024
    assert cfg.max_steps(world) == 1526                        # ceil(200M / 131072), the authors' T
    assert cfg.scaled_lr(world) == 5e-5
    rec = cfg.batch_record(world)
    assert (rec["world_size"], rec["global_batch"], rec["max_steps"], rec["learning_rate"]) == (world, 128, 1526, 5e-5)
    assert "fixed" in rec["learning_rate_rule"]


def test_qwen3_preset_and_a_world_that_does_not_divide():
    cfg = load_config(TrainConfig, QWEN3)
    assert [cfg.batch_plan(w) for w in (1, 2, 8, 32)] == [(8, 4), (8, 2), (4, 1), (1, 1)]
    with pytest.raises(ConfigError) as e:
        cfg.batch_plan(3)
    msg = str(e.value)
    assert "\n" not in msg and "32 sequences" in msg and "1, 2, 4, 8, 16, 32 processes" in msg
    assert "global_batch=0" in msg


def test_the_sqrt_rule_stays_an_explicit_option():
    cfg = TrainConfig(batch_size=32, grad_accum=4)             # no global batch: per-process batches
    assert cfg.world_tokens_per_step(8) == 8 * 131072 and cfg.max_steps(8) == 191  # ceil(200M / 1048576)
    assert cfg.scaled_lr(4) == pytest.approx(1e-4) and "sqrt" in cfg.lr_rule(4)
    assert TrainConfig(scale_lr=False).scaled_lr(4) == 5e-5


def test_a_split_that_does_not_make_the_global_batch_is_refused():
    with pytest.raises(ConfigError, match=r"--batch-size 16 x --grad-accum 4 = 64 .* pass --grad-accum 8"):
        load_config(TrainConfig, GPT2, None, {"batch_size": 16})
    assert load_config(TrainConfig, GPT2, None, {"batch_size": 16, "grad_accum": 8}).batch_plan(2) == (16, 4)


def _make_plan(*args):
    return subprocess.run(["make", "-s", "-C", str(REPO), "plan", *args], capture_output=True, text=True)


def test_make_plan_refuses_an_unknown_table_or_missing_configs():
    """Issue 14 point 10: nothing printed for table9, configs that do not exist for table3."""
    out = _make_plan("TABLE=table9")
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert "TABLE=table9: choose table2, table3 or table4" in out.stderr
    out = _make_plan("TABLE=table3", "MODEL=Qwen/Qwen3-0.6B")
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert "dispersion-early-half" in out.stderr and "MODEL gpt2" in out.stderr
    out = _make_plan("TABLE=table2", "MODEL=Qwen/Qwen3-1.7B", "SEEDS=1 2")
    configs = [line.split("--config ")[1].split()[0] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(configs) == 14 and all((REPO / c).is_file() for c in configs)


@pytest.mark.slow
def test_a_paper_preset_on_one_and_two_processes_trains_the_same(tmp_path):
    """The GPT-2 preset, shrunk to the tiny model: 8 sequences per step as 4 x 2 on one
    process and 4 x 1 on each of two (gloo); T = ceil(1537 / 256) = 7 either way."""
    shrink = ["--config", str(GPT2), "--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32",
              "--batch-size", "4", "--grad-accum", "2", "--set", "global_batch=8", "--train-tokens", str(32 * 8 * 6 + 1),
              "--no-gradient-checkpointing", "--condensation-every", "0", "--logging-steps", "1", "--lr", "0.001"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = {}
    for world in (1, 2):
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if world == 2 else \
            [sys.executable]
        out = subprocess.run([*launch, "-m", "lmdisp", "midtrain", *shrink, "--output", str(tmp_path / f"w{world}")],
                             env=env, cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        records = [json.loads(x) for x in (tmp_path / f"w{world}" / "metrics.jsonl").read_text().splitlines()]
        manifest = json.loads((tmp_path / f"w{world}" / "manifest.json").read_text())
        runs[world] = ([(r["step"], r["learning_rate"], r["ce"], r["reg"]) for r in records if "ce" in r], manifest)
    (one, m1), (two, m2) = runs[1], runs[2]
    assert (m1["world_size"], m1["per_device_batch"], m1["grad_accum"]) == (1, 4, 2)
    assert (m2["world_size"], m2["per_device_batch"], m2["grad_accum"]) == (2, 4, 1)
    for key in ("global_batch", "tokens_per_step", "max_steps", "steps", "learning_rate"):
        assert m1[key] == m2[key], key
    assert m1["steps"] == 7 and m1["tokens_per_step"] == 256
    assert [s for s, *_ in one] == [s for s, *_ in two] == list(range(1, 8))
    for (_, lr1, ce1, reg1), (_, lr2, ce2, reg2) in zip(one, two):
        assert lr1 == pytest.approx(lr2, rel=1e-9)
        assert ce1 == pytest.approx(ce2, rel=1e-4) and reg1 == pytest.approx(reg2, rel=1e-4)
