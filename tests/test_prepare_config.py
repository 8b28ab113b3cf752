"""`prepare` has its own data config (issue 15 point 3), a budget beyond the corpus is refused
unless repetition is allowed (issue 14 point 4), and a precision or sharding the machine cannot
give is refused at start (issue 14 point 5)."""

import json
import re

import pytest

from test_errors import TRAIN, nothing_in, refused

TINY = ["--model", "random:tiny-gpt2", "--context-length", "32"]


def _corpus(tmp_path):
    """A small local corpus: a few hundred tokens, far below the budgets used here."""
    path = tmp_path / "small.txt"
    path.write_text("\n".join(f"Line {i} of a short corpus holds a few words about rivers and hills." for i in range(30)))
    return path


def test_prepare_set_of_a_training_key_is_refused_with_the_data_keys(run_cli, tmp_path):
    line = refused(run_cli("prepare", *TINY, "--dataset", "builtin", "--set", "lr=0.1"), "--set 'lr=0.1'",
                   "lr is a TrainConfig key this command does not read")
    keys = set(re.findall(r"[a-z_]+", line.split("key one of", 1)[1]))
    assert {"dataset", "context_length", "train_tokens", "allow_repeat", "packing"} <= keys
    assert not keys & {"lr", "loss", "seed", "output"}  # training keys are not prepare's


def test_prepare_validates_as_training_does(run_cli):
    for args, needle in [(["--context-length", "1"], "--context-length 1: must be >= 2"),
                         (["--set", "packing=per-batch"], "--set packing='per-batch': choose one of continuous, "
                                                          "per-1000")]:
        refused(run_cli("prepare", "--model", "random:tiny-gpt2", "--dataset", "builtin", *args), needle)
        refused(run_cli("midtrain", *TRAIN, *args), needle)  # one validation path: the same line


def test_prepare_help_lists_its_settings(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = run_cli("prepare", "--help").out
    section = out.split("Settings for --set", 1)[1]
    for key in ("subset = None", "split = 'train'", "packing = 'continuous' [continuous|per-1000]", "cache_dir"):
        assert key in section, key
    assert "--allow-repeat" in out and "lr =" not in section


def test_prepare_reads_a_training_config_for_its_data(run_cli, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: random:tiny-gpt2\ndataset: builtin\ncontext_length: 32\ntrain_tokens: 512\n"
                      "loss: dispersion\nlambda_disp: 0.5\nlr: 0.001\n")
    res = run_cli("prepare", "--config", config, "--set", f"cache_dir={tmp_path / 'cache'}")
    assert res.code == 0 and "16 for training" in res.out.replace("\n", " "), res.out + res.err


def test_a_budget_beyond_the_corpus_says_its_epochs_and_needs_allow_repeat(run_cli, tmp_path):
    corpus, cache = _corpus(tmp_path), tmp_path / "cache"
    data = [*TINY, "--dataset", corpus, "--train-tokens", "4096", "--set", f"cache_dir={cache}"]
    line = refused(run_cli("prepare", *data), "epochs of", "--allow-repeat")
    epochs, tokens = re.search(r"is ([\d.]+) epochs .*\(([\d,]+) training tokens", line).groups()
    assert float(epochs) == pytest.approx(4096 / int(tokens.replace(",", "")), abs=0.05)
    run = tmp_path / "run"
    train = [*data, "--batch-size", "2", "--grad-accum", "1", "--no-gradient-checkpointing",
             "--condensation-every", "0", "--logging-steps", "1", "--output", run]
    refused(run_cli("midtrain", *train), f"is {epochs} epochs of")
    assert not run.exists()  # refused before the run folder is made
    assert run_cli("prepare", *data, "--allow-repeat").code == 0
    res = run_cli("midtrain", *train, "--allow-repeat")
    assert res.code == 0, res.err
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    # the Trainer ran the repeats: 4096 / (32 x 2) = 64 steps over the announced blocks, in batches
    # of 2 with the last odd block dropped (dataloader_drop_last)
    blocks = int(tokens.replace(",", "")) // 32
    assert last["step"] == 64 and last["epoch"] == pytest.approx(64 / (blocks // 2), abs=1e-3)


def test_fp16_on_a_cpu_is_refused(run_cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 is real on a GPU")
    results = tmp_path / "results"
    refused(run_cli("midtrain", *TRAIN, "--precision", "fp16", "--set", f"results_dir={results}"),
            "--precision fp16 needs a GPU", "--precision fp32")
    assert nothing_in(results)


def test_fsdp_that_cannot_run_is_refused(run_cli, tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("FSDP can run here")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    results = tmp_path / "results"
    refused(run_cli("midtrain", *TRAIN, "--set", f"results_dir={results}"), "FSDP was requested",
            "configs/accelerate/ddp.yaml")
    assert nothing_in(results)
