"""One vocabulary across commands (issue 15 points 5 and 6): an option has one name, one panel
and one meaning on every command that has it; an old spelling gets a one-line hint."""

import dataclasses

import pytest

from test_errors import refused

CONCEPTS = ("model", "tokenizer", "trust_remote_code", "dtype", "device", "output", "results_dir", "plots")


def _configs():
    from lmdisp.eval.config import EvaluateConfig
    from lmdisp.eval.report import ReportConfig
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.train.config import TrainConfig
    from lmdisp.train.data_config import DataConfig

    return {"measure": MeasureConfig, "midtrain": TrainConfig, "prepare": DataConfig, "evaluate": EvaluateConfig,
            "report": ReportConfig}


def test_one_panel_per_concept_and_results_dir_everywhere():
    panels: dict[str, set] = {}
    for command, cls in _configs().items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in CONCEPTS:
            field = fields.get(name)
            if field is not None and field.metadata["cli"] == "flag":
                panels.setdefault(name, set()).add(field.metadata["panel"])
        if "results_dir" in fields:  # a flag wherever it exists, not --set-only somewhere
            assert fields["results_dir"].metadata["cli"] == "flag", command
    assert {name: len(p) for name, p in panels.items()} == {name: 1 for name in panels}, panels
    assert panels["trust_remote_code"] == panels["model"] == panels["tokenizer"] == {"Model"}
    assert panels["output"] == panels["results_dir"] == panels["plots"] == {"Outputs"}
    assert all(f.metadata["panel"] for f in dataclasses.fields(_configs()["report"]) if f.metadata["cli"] == "flag")


@pytest.mark.parametrize("args, needle", [
    (["report", "x", "--plot"], "--plot is now --plots"),
    (["report", "x", "--no-plot"], "--plot is now --plots"),
    (["report", "x", "--set", "plot=false"], "--set: plot is now plots"),
    (["evaluate", "--tasks", "list"], "--tasks list is now --list-tasks '*'"),
])
def test_old_spellings_get_a_one_line_hint(run_cli, args, needle):
    refused(run_cli(*args), needle)


def test_preset_is_config_in_evaluate():
    import typer.main

    from lmdisp.cli.main import app

    command = typer.main.get_command(app).commands["evaluate"]
    (config,) = [p for p in command.params if p.name == "config"]
    assert {"--config", "-c", "--preset"} <= set(config.opts)
    assert "preset" not in {p.name for p in command.params}  # no second option for the same thing


def test_dtype_auto_is_the_checkpoints_dtype_on_every_command(tiny_gpt2_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lmdisp.eval.config import EvaluateConfig
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.models import load_model, resolve_dtype

    folder = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).to(torch.bfloat16).save_pretrained(folder)
    for device in ("cpu", "cuda"):  # no GPU needed: the meaning does not depend on the device
        assert resolve_dtype("auto", device) == "auto"
    assert load_model(str(folder), dtype="auto", device="cpu", tokenizer=str(tiny_gpt2_dir)).model.dtype == torch.bfloat16
    assert load_model(str(tiny_gpt2_dir), dtype="auto", device="cpu").model.dtype == torch.float32
    assert EvaluateConfig(tasks="x").dtype == "auto" and MeasureConfig().dtype == "float32"  # defaults, documented


def test_one_meaning_per_name():
    import lmdisp.eval.harness as harness
    import lmdisp.measure.run as measure_run
    import lmdisp.train.config as train_config
    import lmdisp.train.losses as losses
    import lmdisp.train.shards as shards

    assert not hasattr(measure_run, "resolve_batch_size") and not hasattr(harness, "resolve_batch_size")
    assert measure_run.measure_batch_size(None, "cpu") == 1 and harness.eval_batch_size(None, "cuda") == "auto"
    assert not hasattr(measure_run, "Progress") and not hasattr(shards, "Progress")
    assert not hasattr(losses, "_positions")
    assert not hasattr(train_config, "regularizers") and not hasattr(train_config.TrainConfig, "regularizer")
    assert train_config.TrainConfig(loss="dispersion").has_regularizer
