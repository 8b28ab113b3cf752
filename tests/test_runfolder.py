"""A training run folder is one type (`lmdisp.runfolder.TrainingRun`) and a model everywhere a
model is accepted; `--resume` of a finished run changes nothing and says so; the library never
rewrites the config it is given."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmdisp.train.config import TrainConfig
from lmdisp.train.run import run_train
from lmdisp.runfolder import MARKER, TrainingRun

TINY = dict(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=4, grad_accum=1,
            lr=1e-3, gradient_checkpointing=False, condensation_every=0, logging_steps=1, save_steps=1,
            warmup_ratio=0.0, train_tokens=256)  # 2 steps, a checkpoint after each
MEASURE = ["--dataset", "builtin", "--repetitions", "2", "--max-length", "32", "--min-words", "64",
           "--max-words", "80", "--no-plots"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ce"
    run = run_train(TrainConfig(**TINY, output=str(out)))
    assert run.steps == 2 and (out / "final" / "config.json").is_file()
    return out


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_the_run_writes_its_marker_and_is_one_type(finished_run, tmp_path):
    run = TrainingRun.at(finished_run)
    assert (finished_run / MARKER).is_file() and run is not None and run.finished
    assert run.config["loss"] == "ce" and run.labels["method"] == "ce" and run.model_folder() == finished_run / "final"
    assert [step for step, _ in run.checkpoints()] == [1, 2]
    assert TrainingRun.containing(finished_run / "checkpoints" / "checkpoint-1") == run
    assert TrainingRun.containing(finished_run / "final") == run
    # a checkpoint cut short by a kill (no trainer_state.json) is not one of its checkpoints
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    (old / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink(missing_ok=True)
    # a run written before the marker existed is still a run (its config.yaml); a measure folder is not
    (old / MARKER).unlink()
    assert TrainingRun.at(old) is not None and [s for s, _ in TrainingRun.at(old).checkpoints()] == [1]
    (tmp_path / "measure").mkdir()
    (tmp_path / "measure" / "config.yaml").write_text("models: [gpt2]\nrepetitions: 2\n")
    assert TrainingRun.at(tmp_path / "measure") is None and TrainingRun.at(tmp_path) is None


def test_a_run_folder_is_a_model_everywhere(finished_run, run_cli, tmp_path):
    """measure (weights and tokenizer), compare, evaluate's resolution and the distill teacher
    all read the run folder as its final/ model: CKA of the run against its final/ is 1."""
    from lmdisp.eval.harness import resolve_model
    from lmdisp.models import load_tokenizer

    assert load_tokenizer(str(finished_run)).get_vocab() == load_tokenizer(str(finished_run / "final")).get_vocab()
    target = resolve_model(str(finished_run))
    assert target.load == str(finished_run / "final") and target.labels["method"] == "ce"
    res = run_cli("measure", finished_run, finished_run / "final", "--compare", *MEASURE, "-o", tmp_path / "m")
    assert res.code == 0, res.err
    a, b = (json.loads(p.read_text()) for p in sorted((tmp_path / "m").glob("*/summary.json")))
    assert a["mean_cos_by_layer"] == b["mean_cos_by_layer"]
    import pandas as pd

    cka = pd.read_csv(tmp_path / "m" / "compare.csv")
    assert np.allclose(cka["cka"], 1.0, atol=1e-5)
    res = run_cli("distill", "--model", "random:tiny-gpt2", "--teacher", finished_run, "--dataset", "builtin",
                  "--context-length", "32", "--batch-size", "4", "--grad-accum", "1", "--train-tokens", "128",
                  "--no-gradient-checkpointing", "--condensation-every", "0", "--output", tmp_path / "d")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["steps"] == 1


def test_resume_of_a_finished_run_replayed_from_its_config_is_a_no_op(finished_run, run_cli):
    """`make fig7` calls midtrain --config ... --resume on every run: a finished one is skipped."""
    before = _snapshot(finished_run)
    res = run_cli("midtrain", "--config", finished_run / "config.yaml", "--output", finished_run, "--resume")
    assert res.code == 0, res.err
    assert "is a finished run (2 steps" in " ".join(res.out.split()) and _snapshot(finished_run) == before


def test_the_library_never_rewrites_the_config_it_is_given(tmp_path):
    """Pre-training names a config (`tiny-gpt2`) and loads `random:tiny-gpt2`; `--resume` with
    nothing to resume starts the run: both are resolved values in the manifest, not edits of cfg."""
    cfg = TrainConfig(**{**TINY, "model": "tiny-gpt2", "train_tokens": 128}, init="scratch", resume=True,
                      output=str(tmp_path / "pre"))
    given = dataclasses.asdict(cfg)
    run = run_train(cfg)
    assert dataclasses.asdict(cfg) == given
    resolved = json.loads((tmp_path / "pre" / "manifest.json").read_text())["resolved"]
    assert resolved == {"model": "random:tiny-gpt2", "start": "new", "world_size": 1, "learning_rate": 1e-3,
                        "resume_from": None}
    assert run.resolved.model == "random:tiny-gpt2" and run.main_process
