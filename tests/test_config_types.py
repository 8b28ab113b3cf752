"""Choices and ranges are types (issue 15 point 4): the loader and a config built in Python
refuse a bad value through one path, in one line; `--help` lists the choices and shows
defaults plainly; options that do nothing with the chosen loss are refused (issue 14 point 5)."""

import typing

import pytest

from lmdisp.errors import ConfigError
from test_errors import TRAIN, refused


@pytest.fixture
def help_of(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one option per line: the choices are never wrapped

    def run(*command):
        res = run_cli(*command, "--help")
        assert res.code == 0, res.err
        return res.out
    return run


@pytest.mark.parametrize("command, option, listed", [
    ("midtrain", "--loss", "[ce | dispersion | dispersion-torchtitan | decorrelation | l2-repel | l2-repel-paper | orthogonalization | "
                           "infonce-cos | noisy-embedding | active-forgetting]"),
    ("midtrain", "--location", "[all|early_half|late_half|last]"),
    ("pretrain", "--precision", "[auto|bf16|fp16|fp32]"),
    ("report", "--select", "[final|best|best-trained]"),
    ("evaluate", "--backend", "[hf|vllm]"),
    ("evaluate", "--checkpoints", "[final|all|trained]"),
    ("measure", "--dtype", "[auto|float32|bfloat16|float16]"),
])
def test_help_lists_the_choices(help_of, command, option, listed):
    line = next(ln for ln in help_of(command).splitlines() if f" {option} " in ln)
    assert listed in line and "<str>" not in line


def test_help_shows_defaults_plainly_and_help_is_not_a_bool(help_of):
    text = help_of("midtrain")
    assert "[default: gpt2]" in text and "[default: 0.1]" in text and "[default: on]" in text
    assert "(gpt2)" not in text and "[default: (" not in text
    help_row = next(ln for ln in text.splitlines() if "--help" in ln)
    assert "<bool>" not in help_row
    assert "<bool>" not in next(ln for ln in help_of().splitlines() if "--help" in ln)  # lmdisp --help
    assert "forget_schedule = 'authors' [authors|cycle]:" in text  # a --set setting lists its choices too


@pytest.mark.parametrize("args, needles", [
    (["report", "x", "--select", "worst"], ["--select 'worst': choose one of final, best, best-trained"]),
    (["evaluate", "--tasks", "arc_easy", "--backend", "jax"], ["--backend 'jax': choose one of hf, vllm"]),
    (["midtrain", *TRAIN, "--precision", "fp8"], ["--precision 'fp8': choose one of auto, bf16, fp16, fp32"]),
    (["midtrain", *TRAIN, "--set", "forget_schedule=weekly"], ["--set forget_schedule='weekly'", "authors, cycle"]),
    (["midtrain", *TRAIN, "--set", "clamp=1.5"], ["--set clamp=1.5: must be in (0, 1)"]),
    (["midtrain", *TRAIN, "--set", "adam_beta2=1"], ["--set adam_beta2=1.0: must be in [0, 1)"]),
    (["measure", "--set", "confidence=0"], ["--set confidence=0.0: must be in (0, 1)"]),
    (["evaluate", "--tasks", "arc_easy", "--num-fewshot", "-1"], ["--num-fewshot -1: must be >= 0"]),
])
def test_bad_choices_and_ranges_are_one_line(run_cli, args, needles):
    refused(run_cli(*args), *needles)


def test_a_config_built_in_python_is_held_to_the_same_types():
    from lmdisp.eval.report import ReportConfig
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.train.config import TrainConfig

    for build, message in [(lambda: TrainConfig(clamp=1.5), "--set clamp=1.5: must be in (0, 1)"),
                           (lambda: TrainConfig(batch_size=0), "--batch-size 0: must be >= 1"),
                           (lambda: TrainConfig(location="middle"), "--location 'middle': choose one of"),
                           (lambda: MeasureConfig(dtype="fp8"), "--dtype 'fp8': choose one of"),
                           (lambda: ReportConfig(runs=["x"], select="worst"), "--select 'worst'")]:
        with pytest.raises(ConfigError) as exc:
            build()
        assert message in str(exc.value)
    assert TrainConfig(loss="l2_repel").loss == "l2-repel"  # the CLI's spelling, normalised in one place


def test_loss_names_are_one_vocabulary():
    from lmdisp.config import Dtype
    from lmdisp.models import DTYPES
    from lmdisp.train.config import BASELINES, LOSS_OPTIONS, REGULARIZERS, LossName
    from lmdisp.train.losses import LOSSES

    names = typing.get_args(typing.get_args(LossName)[0])
    assert set(names) == set(BASELINES) | set(REGULARIZERS) == set(LOSS_OPTIONS)
    assert sorted(LOSSES) == sorted(REGULARIZERS)  # the registry is spelt as --loss is
    assert typing.get_args(Dtype) == DTYPES


@pytest.mark.parametrize("extra, needles", [
    (["--loss", "ce", "--lambda", "0.5", "--location", "last"],
     ["--lambda 0.5, --location last: do nothing with --loss ce", "dispersion"]),
    (["--loss", "dispersion", "--set", "noise_alpha=5"], ["--set noise_alpha=5.0: does nothing with --loss dispersion",
                                                          "noisy-embedding"]),
    (["--loss", "decorrelation", "--tau", "0.5"], ["--tau 0.5: does nothing with --loss decorrelation"]),
    (["--loss", "orthogonalization", "--set", "forget_every=10"], ["forget_every=10", "active-forgetting"]),
    (["--set", "distill_alpha=0.7"], ["distill_alpha=0.7: does nothing without a teacher"]),
])
def test_options_that_do_nothing_with_the_loss_are_refused(run_cli, tmp_path, extra, needles):
    refused(run_cli("midtrain", *TRAIN, "--output", tmp_path / "r", *extra), *needles)
    assert not (tmp_path / "r").exists()


def test_options_at_their_default_or_read_by_the_loss_pass():
    from lmdisp.train.config import TrainConfig

    TrainConfig(loss="ce", lambda_disp=0.1, location="all")           # defaults: nothing to refuse
    TrainConfig(loss="dispersion", lambda_disp=0.5, tau=0.5, clamp=0.2, location="last")
    TrainConfig(loss="noisy-embedding", noise_alpha=5.0)
    TrainConfig(loss="active-forgetting", forget_every=10, forget_schedule="cycle")
