"""Every bad input gets one clear line (exit code 2, no traceback) before any work, and leaves
no run folder behind; one test per class of problem, parametrised over its examples."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

MEASURE = ["--dataset", "builtin", "-r", "2", "--max-length", "16", "--min-words", "40", "--max-words", "50",
           "--no-plots"]
TRAIN = ["--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32", "--batch-size", "2",
         "--grad-accum", "1", "--train-tokens", "256", "--no-gradient-checkpointing", "--condensation-every", "0",
         "--logging-steps", "1"]


def refused(res, *needles):
    """Exit code 2, a single line on stderr that names what is wrong, no traceback."""
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert res.code == 2, (res.code, res.err, res.out)
    assert len(lines) == 1, res.err
    assert lines[0].startswith("error: ") and "Traceback" not in res.err + res.out
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def nothing_in(folder: Path) -> bool:
    """No file and no run folder (`<results>/<command>/<run>`) below `folder`."""
    found = list(folder.rglob("*")) if folder.exists() else []
    return not any(p.is_file() or len(p.relative_to(folder).parts) > 1 for p in found)


# ----------------------------------------------------------------------------- 1. file system

@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nobody can write in: chmod 555, or (as root, who ignores modes) every file
    creation in it failing with EACCES as on a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folder


COMMANDS = {
    "measure": ["measure", "random:tiny-gpt2", *MEASURE],
    "midtrain": ["midtrain", *TRAIN],
    "evaluate": ["evaluate", "--model", "random:tiny-gpt2", "--tasks", "arc_easy"],
    "report": ["report", "."],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["read-only parent", "read-only folder", "parent is a file", "results-dir"])
def test_unwritable_output_is_refused_before_any_work(run_cli, read_only, tmp_path, command, where):
    (tmp_path / "file").write_text("x")
    out = {"read-only parent": read_only / "out", "read-only folder": read_only,
           "parent is a file": tmp_path / "file" / "out"}.get(where)
    args = ["--output", out] if out else ["--set", f"results_dir={read_only / 'results'}"]
    res = run_cli(*COMMANDS[command], *args)
    refused(res, "file" if where == "parent is a file" else read_only)
    assert "loading" not in res.out and "train " not in res.out  # refused before any work
    assert nothing_in(read_only)


# ----------------------------------------------------------------------------- 2. models

@pytest.fixture
def bad_models(tmp_path, tiny_gpt2_dir):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_gpt2_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp_path / "not-json.json").write_text('{"model_type": "gpt2", ')
    (tmp_path / "unknown-type.json").write_text(json.dumps({"model_type": "gtp2"}))
    (tmp_path / "small-vocab.json").write_text(json.dumps({"model_type": "gpt2", "tokenizer": "tiny-bpe",
                                                            "vocab_size": 100, "n_layer": 2, "n_embd": 16,
                                                            "n_head": 2, "n_positions": 64}))
    run = tmp_path / "unfinished-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: gpt2\nloss: ce\n")
    return tmp_path


@pytest.mark.parametrize("command, spec, needles", [
    ("measure", "truncated", ["truncated/model.safetensors", "truncated"]),
    ("measure", "random:{}/not-json.json", ["not-json.json", "not valid JSON"]),
    ("measure", "random:{}/unknown-type.json", ["unknown-type.json", "gtp2", "did you mean gpt2"]),
    ("measure", "unfinished-run", ["unfinished-run", "without a final/"]),
    ("measure", "random:{}/small-vocab.json", ["100 embedding rows", "1024 tokens"]),
    ("midtrain", "random:{}/small-vocab.json", ["100 embedding rows", "1024 tokens"]),
    ("midtrain", "truncated", ["truncated/model.safetensors"]),
    ("midtrain", "random:tiny-bert", ["not a causal language model"]),
    ("pretrain", "tiny-bert", ["not a causal language model"]),
    ("evaluate", "unfinished-run", ["without a final/"]),
])
def test_damaged_or_unsuitable_model_is_refused(run_cli, bad_models, command, spec, needles):
    spec = spec.format(bad_models) if "{}" in spec else str(bad_models / spec) if (bad_models / spec).exists() else spec
    results = bad_models / "results"
    if command == "measure":
        args = ["measure", spec, *MEASURE, "--set", f"results_dir={results}"]
    elif command == "evaluate":
        args = ["evaluate", "--model", spec, "--tasks", "arc_easy", "--results-dir", results]
    else:
        args = [command, *TRAIN, "--model", spec, "--set", f"results_dir={results}"]
    refused(run_cli(*args), *needles)
    assert nothing_in(results)


# ----------------------------------------------------------------------------- 3. text inputs

@pytest.fixture
def bad_texts(tmp_path):
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02\xff\xfe binary")
    (tmp_path / "latin1.txt").write_bytes("line one\ncaf\u00e9 au lait\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": "cut\n')
    (tmp_path / "lists.jsonl").write_text('{"text": "fine"}\n[1, 2]\n')
    (tmp_path / "no-text.jsonl").write_text('{"body": "fine"}\n')
    (tmp_path / "table.parquet").write_bytes(b"PAR1 not really")
    return tmp_path


TEXT_CASES = [
    ("--texts", "binary.txt", ["binary.txt", "binary file"]),
    ("--texts", "latin1.txt", ["latin1.txt, line 2", "not UTF-8"]),
    ("--texts", "empty.txt", ["empty.txt", "no text"]),
    ("--texts", "broken.jsonl", ["broken.jsonl, line 2", "not valid JSON"]),
    ("--texts", "lists.jsonl", ["lists.jsonl, line 2", "JSON object", "list"]),
    ("--texts", "table.parquet", ["table.parquet", "--dataset"]),
    ("--dataset", "binary.txt", ["binary.txt", "binary file"]),
    ("--dataset", "latin1.txt", ["latin1.txt, line 2", "not UTF-8"]),
    ("--dataset", "empty.txt", ["empty.txt", "empty"]),
    ("--dataset", "broken.jsonl", ["broken.jsonl, line 2", "not valid JSON"]),
    ("--dataset", "lists.jsonl", ["lists.jsonl, line 2", "JSON object"]),
    ("--dataset", "no-text.jsonl", ["no-text.jsonl", "`text`"]),
    ("--dataset", "table.parquet", ["table.parquet", "parquet"]),
    ("--dataset", "wikitxt", ["did you mean wikitext"]),
]


@pytest.mark.parametrize("command, option, name, needles", [
    (command, *case) for command in ("measure", "midtrain") for case in TEXT_CASES
    if command == "measure" or case[0] == "--dataset"])  # --texts is measure's
def test_bad_text_input_names_file_line_and_problem(run_cli, bad_texts, command, option, name, needles):
    results = bad_texts / "results"
    value = bad_texts / name if (bad_texts / name).exists() else name
    base = ["measure", "random:tiny-gpt2", *MEASURE] if command == "measure" else ["midtrain", *TRAIN]
    refused(run_cli(*base, option, value, "--set", f"results_dir={results}"), *needles)
    assert nothing_in(results)


def test_corpus_names_are_one_vocabulary(run_cli, tmp_path, monkeypatch):
    """Every corpus name either command knows, `measure` and `midtrain` both accept (no
    "not a named corpus") and both read from the same hub dataset, configuration and split."""
    import datasets

    from lmdisp.data import PAPER_CORPORA, TRAIN_CORPORA

    class Asked(Exception):
        pass

    asked = []

    def load_dataset(path, name=None, split=None, **kw):
        asked.append((path, name, split))
        raise Asked(path)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for corpus in sorted({*PAPER_CORPORA, *TRAIN_CORPORA}):
        seen = {}
        for command in ("measure", "midtrain"):
            asked.clear()
            base = ["measure", "random:tiny-gpt2", *MEASURE] if command == "measure" else ["midtrain", *TRAIN]
            res = run_cli(*base, "--dataset", corpus, "--set", f"results_dir={tmp_path / 'results'}")
            assert "not a named corpus" not in res.err, (command, corpus, res.err)
            assert asked, (command, corpus, res.err)
            seen[command] = asked[0]
        assert seen["measure"] == seen["midtrain"], (corpus, seen)
    assert nothing_in(tmp_path / "results")


# ----------------------------------------------------------------------------- 4. options

class _Tripwire(dict):
    def __iter__(self):
        pytest.fail("corpus text was read")

    __getitem__ = keys = items = __iter__


def tripwires(monkeypatch) -> None:
    """Fail the test if any text or any model is loaded, whichever lmdisp function does it:
    at the sources themselves (the builtin corpus's pydoc topics, `datasets.load_dataset`)
    and at the construction of any transformers model (from_pretrained and from_config both
    build one through `PreTrainedModel.__init__`)."""
    import datasets
    import pydoc_data.topics
    import transformers

    monkeypatch.setattr(pydoc_data.topics, "topics", _Tripwire())
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("a dataset was loaded"))
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", lambda *a, **k: pytest.fail("a model was built"))


@pytest.mark.parametrize("args, needles", [
    (["measure", "random:tiny-gpt2", *MEASURE, "--device", "gpu"], ["--device 'gpu'"]),
    (["evaluate", "--model", "random:tiny-gpt2", "--tasks", "arc_easy", "--device", "gpu"], ["--device 'gpu'"]),
    (["evaluate", "--model", "random:tiny-gpt2", "--tasks", "arc_easy", "--gen-kwargs", "greedy"],
     ["--gen-kwargs", "key=value"]),
    (["midtrain", *TRAIN, "--report-to", "tensorbored"], ["--report-to tensorbored", "tensorboard"]),
    (["midtrain", *TRAIN, "--condensation-every", "-1"], ["--condensation-every -1: must be >= 0"]),
    (["midtrain", *TRAIN, "--set", "condensation_sequences=0"], ["condensation_sequences=0", ">= 1"]),
    (["midtrain", *TRAIN, "--set", "num_proc=0"], ["num_proc"]),
    (["midtrain", *TRAIN, "--loss", "dispersion", "--tau", "1e-9"], ["--tau 1e-09", ">= 1e-06"]),
    (["midtrain", *TRAIN, "--loss", "dispersion", "--tau", "inf"], ["--tau inf", "finite"]),
    (["midtrain", *TRAIN, "--set", "trainer_args={optim: sgdd}"], ["trainer_args"]),
])
def test_bad_options_are_refused_before_data_or_weights_load(run_cli, tmp_path, monkeypatch, args, needles):
    if args[-2:] != ["--set", "trainer_args={optim: sgdd}"]:  # that one is checked by TrainingArguments itself
        tripwires(monkeypatch)
    results = tmp_path / "results"
    key = "--results-dir" if args[0] in ("measure", "evaluate") else "--set"
    refused(run_cli(*args, key, results if key != "--set" else f"results_dir={results}"), *needles)
    assert nothing_in(results)  # no run folder holding only a config.yaml


def test_report_to_a_missing_package_is_refused(run_cli, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # wandb absent, whatever this machine has
                        lambda name, *a, **k: None if name.split(".")[0] == "wandb" else real(name, *a, **k))
    refused(run_cli("midtrain", *TRAIN, "--report-to", "wandb", "--output", tmp_path / "r"), "pip install wandb")
    assert not (tmp_path / "r").exists()


def test_tau_far_from_the_paper_range_is_noted(caplog):
    from lmdisp.train.config import TrainConfig

    with caplog.at_level("WARNING", logger="lmdisp"):
        TrainConfig(loss="dispersion", tau=0.001)
    assert "scales as 1 / tau" in caplog.text


# ----------------------------------------------------------------------------- 5. resume

@pytest.fixture
def finished_run(tmp_path, run_cli):
    out = tmp_path / "run"
    res = run_cli("midtrain", *TRAIN, "--train-tokens", str(4 * 64), "--save-steps", "2", "--output", out)
    assert res.code == 0, res.err
    return out


def test_resume_refuses_a_finished_run_and_changes_nothing(run_cli, finished_run):
    before = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}
    refused(run_cli("midtrain", *TRAIN, "--train-tokens", str(4 * 64), "--save-steps", "2",
                    "--output", finished_run, "--resume"), "finished run", "nothing changed")
    after = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}
    assert before == after


def test_resume_with_nothing_to_resume_starts_the_run_and_says_so(run_cli, tmp_path):
    """`--resume` both starts and continues a run (the make targets pass it every time)."""
    res = run_cli("midtrain", *TRAIN, "--output", tmp_path / "new", "--resume")
    assert res.code == 0, res.err
    assert "nothing to resume" in res.out + res.err and (tmp_path / "new" / "final").is_dir()
    refused(run_cli("midtrain", *TRAIN, "--output", tmp_path / "other", "--set", "resume_from=checkpoint-2"),
            "resume_from=checkpoint-2", "no run")
    assert not (tmp_path / "other").exists()


def test_resume_from_a_chosen_checkpoint(run_cli, finished_run):
    """An unfinished run (final/ gone, status running) continued from checkpoint-2, not the
    newest checkpoint-4: the steps after 2 are trained (and logged) again."""
    manifest = json.loads((finished_run / "manifest.json").read_text())
    (finished_run / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    shutil.rmtree(finished_run / "final")
    args = ["midtrain", *TRAIN, "--train-tokens", str(4 * 64), "--save-steps", "2", "--output", finished_run]
    refused(run_cli(*args, "--set", "resume_from=checkpoint-9"), "resume_from=checkpoint-9", "checkpoint-2")
    res = run_cli(*args, "--set", "resume_from=checkpoint-2")
    assert res.code == 0, res.err
    steps = [r["step"] for r in map(json.loads, (finished_run / "metrics.jsonl").read_text().splitlines())
             if "ce" in r]
    assert steps == [1, 2, 3, 4]  # 3 and 4 logged once, by the resumed run
    assert json.loads((finished_run / "manifest.json").read_text())["status"] == "finished"


def test_resume_before_the_first_checkpoint_starts_again_and_says_so(run_cli, finished_run):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    (finished_run / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    shutil.rmtree(finished_run / "final")
    shutil.rmtree(finished_run / "checkpoints")
    res = run_cli("midtrain", *TRAIN, "--train-tokens", str(4 * 64), "--save-steps", "2", "--output", finished_run,
                  "--resume")
    assert res.code == 0, res.err
    assert "note: " in res.out and "no complete checkpoint yet: starting it again from step 0" in res.out
    steps = [r["step"] for r in map(json.loads, (finished_run / "metrics.jsonl").read_text().splitlines())
             if "ce" in r]
    assert steps == [1, 2, 3, 4]  # the old records were replaced, not duplicated


def test_ctrl_c_says_interrupted_and_how_to_resume(run_cli, tmp_path, monkeypatch):
    from lmdisp.train.trainer import DispersionTrainer

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(DispersionTrainer, "train", interrupted)
    res = run_cli("midtrain", *TRAIN, "--output", tmp_path / "run")
    assert res.code == 130 and "Traceback" not in res.err
    line = res.err.strip().splitlines()[-1]
    assert line.startswith("interrupted") and f"--output {tmp_path / 'run'} --resume" in line


# ----------------------------------------------------------------------------- 6. evaluation and report

def test_task_yaml_syntax_error_is_shown(run_cli, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: mine\ndataset_path: json\n  doc_to_text: '{{x}}\n")
    refused(run_cli("evaluate", "--model", "random:tiny-gpt2", "--tasks", "mine", "--include-path", tasks,
                    "--results-dir", tmp_path / "results"), "mine.yaml, line 3", "not valid YAML")
    assert not (tmp_path / "results").exists()


def _eval_run(folder: Path, manifest: str, tasks: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(manifest)
    (folder / "tasks.csv").write_text(tasks)
    return folder


GOOD_MANIFEST = json.dumps({"command": "evaluate", "labels": {"base_model": "m", "method": "ce", "seed": 1}})
GOOD_TASKS = "task,metric,filter,value,stderr,n_shot,limit,n,higher_is_better\narc_easy,acc,none,50,1,0,,10,True\n"


@pytest.mark.parametrize("manifest, tasks, needles", [
    ('{"command": "evaluate", ', GOOD_TASKS, ["damaged manifest.json"]),
    (GOOD_MANIFEST, "", ["damaged tasks.csv"]),
    (GOOD_MANIFEST, "task,value\narc_easy,50\n", ["damaged tasks.csv", "no column metric"]),
    (GOOD_MANIFEST, GOOD_TASKS.replace(",50,", ",fifty,"), ["damaged tasks.csv", "non-numeric"]),
])
def test_report_names_a_damaged_run_folder(run_cli, tmp_path, manifest, tasks, needles):
    _eval_run(tmp_path / "evals" / "good", GOOD_MANIFEST, GOOD_TASKS)
    bad = _eval_run(tmp_path / "evals" / "bad", manifest, tasks)
    refused(run_cli("report", tmp_path / "evals", "--results-dir", tmp_path / "results"), bad, *needles)
    assert not (tmp_path / "results").exists()


def test_tasks_list_shows_lm_eval_tasks_and_include_path(run_cli, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mine.yaml").write_text("task: arc_mine\ndataset_path: json\noutput_type: loglikelihood\n"
                                     "doc_to_text: '{{x}}'\ndoc_to_target: '{{y}}'\ntest_split: test\n")
    res = run_cli("evaluate", "--list-tasks", "arc_*", "--include-path", tasks)
    assert res.code == 0, res.err
    names = res.out.split()
    assert {"arc_easy", "arc_challenge", "arc_mine"} <= set(names) and "hellaswag" not in names
    # the old spelling: one line naming the new one
    refused(run_cli("evaluate", "--tasks", "list:arc_*"), "--tasks list:arc_* is now --list-tasks 'arc_*'")


# ----------------------------------------------------------------------------- 7. a quiet terminal

def test_terminal_shows_lmdisp_only_and_the_log_keeps_the_rest(run_cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli("midtrain", *TRAIN, "--loss", "dispersion", "--output", out)
    assert res.code == 0, res.err
    assert res.err.strip() == ""  # no library notice, bar or warning
    assert "loss_type" not in res.out and "it/s" not in res.out and "Map" not in res.out
    progress = [ln for ln in res.out.splitlines() if ln.startswith("train ")]
    assert progress and all("/4" in ln and "ce " in ln and "reg " in ln for ln in progress[1:])
    assert "run folder" in (out / "lmdisp.log").read_text()
    res = run_cli("midtrain", *TRAIN, "--loss", "ce", "--output", tmp_path / "ce")
    assert res.code == 0 and " reg " not in res.out  # only the active terms


def test_plain_progress_prints_a_line_per_tenth():
    from lmdisp.cli.ui import PlainProgress, console

    with console.capture() as cap:
        with PlainProgress() as bar:
            task = bar.add_task("measure", total=50)
            for i in range(1, 51):
                bar.update(task, completed=i)
    lines = cap.get().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("measure 50/50 (100%)")


def test_wide_table_keeps_numbers(monkeypatch):
    import pandas as pd
    from rich.console import Console

    import lmdisp.cli.measure as cli_measure

    narrow = Console(width=80, record=True, file=open(os.devnull, "w"))
    monkeypatch.setattr(cli_measure, "console", narrow)
    row = dict(model="/a/very/long/path/to/some/results/midtrain/20260101-000000_gpt2-dispersion-seed1/final",
               params=124e6, layers=12, spearman_rho=0.987, kendall_tau=0.912, mean_cos_first=0.123,
               mean_cos_last=0.456, wall_time_s=12.3, site="residual", rho_ci_low=0.95, rho_ci_high=0.99)
    cli_measure._print_table(type("Run", (), {"table": pd.DataFrame([row]), "compare": None})())
    text = narrow.export_text()
    for number in ("+0.987", "+0.912", "0.123", "0.456", "12.3", "residual"):  # params gives way to the site
        assert number in text


# ----------------------------------------------------------------------------- 8. help

@pytest.mark.parametrize("command, cls", [("measure", "lmdisp.measure.config.MeasureConfig"),
                                          ("midtrain", "lmdisp.train.config.TrainConfig"),
                                          ("evaluate", "lmdisp.eval.config.EvaluateConfig"),
                                          ("report", "lmdisp.eval.report.ReportConfig")])
def test_help_lists_every_field_with_its_default(run_cli, monkeypatch, command, cls):
    import dataclasses
    import importlib

    monkeypatch.setenv("COLUMNS", "250")
    module, name = cls.rsplit(".", 1)
    res = run_cli(command, "--help")
    text = " ".join(res.out.split())
    for field in dataclasses.fields(getattr(importlib.import_module(module), name)):
        meta = field.metadata
        if meta.get("cli") == "fixed" or (meta.get("commands") and command not in meta["commands"]):
            continue
        shown = field.name.upper() if meta.get("cli") == "arg" else \
            f"{field.name} =" if meta.get("cli") == "set" else "--" + field.name.replace("_", "-")
        if field.name == "lambda_disp":
            shown = "--lambda"
        assert shown.lower() in text.lower() if meta.get("cli") == "arg" else shown in text, (command, field.name)
    assert "--verbose" in text
    if command == "midtrain":
        assert "teacher" not in text and "distill_alpha" not in text
        assert "trust-remote-code" in text and "run their own Python code" in text


def test_library_and_cli_loss_names_are_one_vocabulary():
    import torch

    from lmdisp.train.config import TrainConfig
    from lmdisp.train.losses import LOSSES, get_loss, regularizer

    hs = [torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    for name in LOSSES:
        dashed = name.replace("_", "-")
        assert get_loss(dashed) is get_loss(name)
        assert torch.equal(regularizer(hs, None, dashed), regularizer(hs, None, name))
        assert TrainConfig(loss=name).loss == TrainConfig(loss=dashed).loss == dashed


# ----------------------------------------------------------------------------- 9. what Trainer users expect

def test_heldout_loss_in_metrics_and_summary_and_readable_weights(run_cli, tmp_path):
    import torch

    from lmdisp.config import load_config
    from lmdisp.models import default_tokenizer, load_model, load_tokenizer
    from lmdisp.train.config import TrainConfig
    from lmdisp.train.run import build_data

    out = tmp_path / "run"
    flags = [*TRAIN, "--condensation-every", "2", "--set", "condensation_sequences=3", "--output", out]
    flags.remove("0")  # the default --condensation-every 0 of TRAIN
    flags.remove("--condensation-every")
    res = run_cli("midtrain", *flags)
    assert res.code == 0, res.err
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in records if "heldout_loss" in r]
    assert [r["step"] for r in held] == [0, 2, 4]
    assert all(r["heldout_perplexity"] == pytest.approx(float(torch.tensor(r["heldout_loss"]).exp()), rel=1e-4)
               for r in held)
    # the last one, recomputed independently from final/ on the same held-out blocks
    cfg = load_config(TrainConfig, out / "config.yaml")
    _, heldout = build_data(cfg, load_tokenizer(default_tokenizer(cfg.model)))
    model = load_model(str(out / "final"), lm_head=True, device="cpu", dtype="float32").model
    with torch.no_grad():
        loss = model(**heldout).loss.item()
    assert held[-1]["heldout_loss"] == pytest.approx(loss, rel=1e-4)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["heldout_loss"] == held[-1]["heldout_loss"]
    assert summary["train_loss"] == [r for r in records if "ce" in r][-1]["ce"]
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "final" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
