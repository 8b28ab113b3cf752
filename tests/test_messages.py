"""What the user reads: usage errors in one line, messages that say what to type instead, output
folders (parents made, nothing overwritten), degenerate statistics flagged, strict JSON, the
measure table at 80 columns (issue 14, points 7, 8 and 10)."""

import json
import os
from pathlib import Path

import pytest

from test_errors import MEASURE, TRAIN, refused


def strict_json(path: Path):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers (JSON.parse, jq) do."""
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


# ----------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args, needles", [
    (["measure", "--repetitons", "3"], ["No such option: --repetitons", "did you mean --repetitions?",
                                        "lmdisp measure --help"]),
    (["measure", "-r", "five"], ["'--repetitions' / '-r'", "integer", "lmdisp measure --help"]),
    (["mesure"], ["No such command 'mesure'", "Did you mean 'measure'?", "lmdisp --help"]),
    (["evaluate", "a", "b"], ["unexpected extra argument", "lmdisp evaluate --help"]),
])
def test_usage_errors_are_one_line_with_the_suggestion(run_cli, args, needles):
    refused(run_cli(*args), *needles)


def test_help_still_exits_zero(run_cli):
    res = run_cli("measure", "--help")
    assert res.code == 0 and "--repetitions" in res.out


# ----------------------------------------------------------------------------- output folders

def test_output_that_is_a_file_or_empty_is_refused(run_cli, tmp_path):
    (tmp_path / "afile").write_text("keep")
    line = refused(run_cli("measure", "random:tiny-gpt2", *MEASURE, "-o", tmp_path / "afile"), "is a file",
                   "-o NEW_FOLDER")
    assert "already holds results" not in line and (tmp_path / "afile").read_text() == "keep"
    for command in (["measure", "random:tiny-gpt2", *MEASURE], ["midtrain", *TRAIN],
                    ["evaluate", "--model", "random:tiny-gpt2", "--tasks", "arc_easy"]):
        refused(run_cli(*command, "-o", ""), "--output ''", "empty folder name")


def test_output_folder_that_holds_results_suggests_o(run_cli, tmp_path):
    """`measure --config <run>/config.yaml` replays the run's `output`: the refusal says what to type."""
    out = tmp_path / "m1"
    assert run_cli("measure", "random:tiny-gpt2", *MEASURE, "-o", out).code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused(run_cli("measure", "--config", out / "config.yaml"), str(out), "already holds results", "-o NEW_FOLDER")
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run_cli("measure", "--config", out / "config.yaml", "-o", tmp_path / "m2")
    assert res.code == 0, res.err


def test_parents_of_an_output_folder_are_created(run_cli, tmp_path, monkeypatch):
    """The README's `midtrain --output results/midtrain/my-run --resume` on a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    res = run_cli("midtrain", *TRAIN, "--output", "results/midtrain/my-run", "--resume")
    assert res.code == 0, res.err
    assert (tmp_path / "results/midtrain/my-run/final").is_dir()
    res = run_cli("measure", "random:tiny-gpt2", *MEASURE, "-o", "deep/er/run")
    assert res.code == 0, res.err and (tmp_path / "deep/er/run/models.csv").is_file()


# ----------------------------------------------------------------------------- what to type instead

def test_named_config_of_another_command_is_named(run_cli):
    refused(run_cli("measure", "--config", "gpt2-dispersion"), "`lmdisp measure` ships none",
            "lmdisp midtrain --config gpt2-dispersion")
    refused(run_cli("midtrain", "--config", "gpt2-dispersoin"), "did you mean gpt2-dispersion")


def test_short_texts_advise_max_length_not_min_words(run_cli, tmp_path):
    texts = tmp_path / "short.txt"
    texts.write_text("a short line\nanother short one\n")
    line = refused(run_cli("measure", "random:tiny-gpt2", "--texts", texts, "-r", "2", "--max-length", "64"),
                   f"--texts {texts}", "lower --max-length to")
    assert "raise --min-words" not in line


def test_unknown_reference_row_is_refused_with_the_rows(run_cli, tmp_path):
    from test_report import fake_run

    for i, (method, seed) in enumerate([("ce", 1), ("ce", 2), ("dispersion", 1), ("dispersion", 2)]):
        fake_run(tmp_path / "runs" / f"r{i}", "gpt2", method, seed, {"arc_easy": 50.0 + i})
    refused(run_cli("report", tmp_path / "runs", "--reference", "dispersoin", "-o", tmp_path / "rep"),
            "--reference 'dispersoin'", "did you mean dispersion?", "ce, dispersion")
    assert not (tmp_path / "rep").exists()
    assert run_cli("report", tmp_path / "runs", "--reference", "ce", "-o", tmp_path / "rep").code == 0


def test_task_template_typo_names_the_field_and_the_line(run_cli, tmp_path):
    from test_evaluation import write_tasks

    tasks = write_tasks(tmp_path)
    path = tasks / "toy_mc.yaml"
    path.write_text(path.read_text().replace("{{question}}", "{{questoin}}"))
    line_no = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "questoin" in ln)
    line = refused(run_cli("evaluate", "--model", "random:tiny-gpt2", "--tasks", "toy_mc", "--include-path", tasks,
                           "--limit", "2"), "`questoin`", f"{path}, line {line_no}")
    assert "offline" not in line


def test_evaluate_takes_the_model_positionally(run_cli, tmp_path):
    """`lmdisp evaluate RUN` (the README's form, litgpt's `evaluate CHECKPOINT_DIR`) is `--model RUN`."""
    from test_evaluation import write_tasks

    tasks = write_tasks(tmp_path)
    res = run_cli("evaluate", "random:tiny-gpt2", "--tasks", "toy_mc", "--include-path", tasks, "--limit", "2",
                  "-o", tmp_path / "ev")
    assert res.code == 0, res.err
    assert strict_json(tmp_path / "ev" / "manifest.json")["model"] == "random:tiny-gpt2"
    refused(run_cli("evaluate", "random:tiny-gpt2", "--model", "gpt2", "--tasks", "toy_mc"), "two models given")


# ----------------------------------------------------------------------------- degenerate statistics, JSON

def test_one_record_corpus_is_flagged(run_cli, tmp_path):
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"text": " ".join(f"word{i}" for i in range(300))}) + "\n")
    res = run_cli("measure", "random:tiny-gpt2", "--dataset", corpus, "-r", "3", "--max-length", "16",
                  "--min-words", "40", "--max-words", "300", "--no-plots", "-o", tmp_path / "m")
    assert res.code == 0, res.err
    assert "note: random:tiny-gpt2: identical repetitions" in " ".join(res.out.split())
    summary = strict_json(tmp_path / "m" / "random-tiny-gpt2" / "summary.json")
    assert summary["degenerate"] is True and "identical repetitions" in summary["warnings"][0]
    assert "identical repetitions" in (tmp_path / "m" / "models.csv").read_text()


def test_one_module_site_is_flagged_and_json_stays_valid(run_cli, tmp_path):
    res = run_cli("measure", "random:tiny-gpt2", *MEASURE, "--site", "h.0.mlp", "-o", tmp_path / "m")
    assert res.code == 0, res.err
    assert "1 layer(s) measured" in " ".join(res.out.split()) and "nan" not in res.out
    folder = tmp_path / "m" / "random-tiny-gpt2"
    summary = strict_json(folder / "summary.json")  # a bare NaN would raise here
    assert summary["spearman_rho"] is None and summary["spearman_rho_ci"] == [None, None]
    assert summary["degenerate"] is True
    strict_json(tmp_path / "m" / "manifest.json")
    sound = run_cli("measure", "random:tiny-gpt2", *MEASURE, "-o", tmp_path / "ok")
    assert strict_json(tmp_path / "ok" / "random-tiny-gpt2" / "summary.json")["degenerate"] is False, sound.err


def test_every_json_writer_is_strict(tmp_path):
    import numpy as np

    from lmdisp.jsontext import json_text
    from lmdisp.runs import write_json

    data = {"a": float("nan"), "b": [float("inf"), np.float32("nan"), np.array([1.0, -np.inf])], "c": 1.5}
    write_json(tmp_path / "x.json", data)
    assert strict_json(tmp_path / "x.json") == {"a": None, "b": [None, None, [1.0, None]], "c": 1.5}
    assert json.loads(json_text({"loss": float("nan")}), parse_constant=lambda t: 1 / 0) == {"loss": None}


# ----------------------------------------------------------------------------- the measure table

@pytest.mark.parametrize("names, sites", [(["random:tiny-gpt2"], ["hidden"]),
                                          (["random:tiny-gpt2", "smollm2-135m"], ["hidden", "residual"]),
                                          (["/a/very/long/path/to/results/midtrain/run-seed1/final"], ["hidden"])])
def test_measure_table_at_80_columns_keeps_names_and_the_rho_interval(monkeypatch, names, sites):
    import pandas as pd
    from rich.console import Console

    import lmdisp.cli.measure as cli_measure

    narrow = Console(width=80, record=True, file=open(os.devnull, "w"))
    monkeypatch.setattr(cli_measure, "console", narrow)
    rows = [dict(model=n, params=124e6, layers=12, spearman_rho=0.987, kendall_tau=0.912, mean_cos_first=0.123,
                 mean_cos_last=0.456, wall_time_s=12.3, site=s, rho_ci_low=0.95, rho_ci_high=0.99)
            for n in names for s in sites]
    cli_measure._print_table(type("Run", (), {"table": pd.DataFrame(rows), "compare": None})())
    lines = narrow.export_text().splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    for name in names:  # each name whole on one line (in the table, or listed above it)
        assert any(name in ln for ln in lines), (name, lines)
    body = [ln for ln in lines if "+0.987" in ln]
    assert len(body) == len(rows)
    for ln in body:
        for cell in ("+0.987", "[+0.95,+0.99]", "+0.912", "0.123", "0.456", "12.3", "124.0M"):
            assert cell in ln, (cell, ln)


# ----------------------------------------------------------------------------- progress and interrupts

def test_ctrl_c_in_midtrain_names_the_last_checkpoint_and_resume_names_it_too(run_cli, tmp_path, monkeypatch):
    """Stopped at step 3 with checkpoint-2 saved: the message says step 2 is where --resume
    continues; the resumed run says so at its start and trains steps 3 and 4."""
    from transformers import TrainerCallback

    import lmdisp.cli.ui as cli_ui

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_ui, "training_progress", StopAt3)
    out = tmp_path / "run"
    args = ["midtrain", *TRAIN, "--train-tokens", str(4 * 64), "--save-steps", "2", "--output", out]
    res = run_cli(*args)
    assert res.code == 130, res.err
    line = " ".join(res.err.split())
    assert "stopped at step 3" in line and f"last checkpoint is step 2 ({out / 'checkpoints' / 'checkpoint-2'})" in line
    assert "(step 3 again)" in line and f"--output {out} --resume" in line
    monkeypatch.undo()
    res = run_cli(*args, "--resume")
    assert res.code == 0, res.err
    assert f"--resume: continuing {out} from step 2" in " ".join(res.out.split())


@pytest.fixture
def toy_tasks(tmp_path):
    from test_evaluation import write_tasks

    folder = tmp_path / "tasks"
    folder.mkdir()
    return write_tasks(folder)


def test_ctrl_c_in_evaluate_prints_the_command_that_continues(run_cli, tmp_path, toy_tasks, monkeypatch):
    import shlex

    import lmdisp.eval.progress as progress

    real = progress._CountingHook.add_partial
    answered = []

    def stop_after_three(self, attr, req, res):
        real(self, attr, req, res)  # the answer is committed to the request cache first
        answered.append(req)
        if len(answered) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress._CountingHook, "add_partial", stop_after_three)
    monkeypatch.chdir(tmp_path)
    res = run_cli("evaluate", "random:tiny-gpt2", "--tasks", "toy_mc", "--include-path", toy_tasks, "--limit", "2")
    assert res.code == 130 and "Traceback" not in res.err
    line = " ".join(res.err.split())
    assert line.startswith("interrupted: evaluation stopped") and "continue with: lmdisp evaluate" in line
    command = shlex.split(line.split("continue with: ")[1])
    (run,) = Path("results/evaluate").iterdir()
    assert command[-2:] == ["--output", str(run)] and command[1:-2] == [
        "evaluate", "random:tiny-gpt2", "--tasks", "toy_mc", "--include-path", str(toy_tasks), "--limit", "2"]
    monkeypatch.setattr(progress._CountingHook, "add_partial", real)
    res = run_cli(*command[1:])
    assert res.code == 0, res.err
    assert "resuming" in res.out and (run / "tasks.csv").is_file()


def test_evaluate_shows_requests_and_rate_and_leaves_the_process_as_it_was(tmp_path, toy_tasks, monkeypatch):
    """In-process through Typer's CliRunner: progress within the task (8 requests: 2 questions x
    4 choices), and afterwards tqdm, lm-eval, logging, warnings, the libraries' progress-bar
    switches and the umask exactly as before (issue 15: no process-wide patches)."""
    import logging
    import warnings

    import datasets
    import lm_eval.evaluator
    import tqdm
    import tqdm.std
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as tlog
    from typer.testing import CliRunner

    from lmdisp.cli.main import app

    monkeypatch.chdir(tmp_path)
    old_mask = os.umask(0o027)
    loggers = ["", "lmdisp", "lm_eval", "transformers", "datasets", "torch", "torch._inductor"]

    def state():
        return {"tqdm_init": vars(tqdm.std.tqdm)["__init__"], "tqdm_enabled": not tqdm.tqdm([], disable=False).disable,
                "git_hash": lm_eval.evaluator.get_git_commit_hash,
                "loggers": [(lg.level, list(lg.handlers), lg.propagate) for lg in map(logging.getLogger, loggers)],
                "filters": list(warnings.filters), "showwarning": warnings.showwarning,
                "bars": (tlog.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
                         are_progress_bars_disabled()), "stderr": os.sys.stderr}

    try:
        before = state()
        res = CliRunner().invoke(app, ["evaluate", "random:tiny-gpt2", "--tasks", "toy_mc", "--include-path",
                                       str(toy_tasks), "--limit", "2", "-o", str(tmp_path / "ev")])
        assert res.exit_code == 0, res.output
        after = state()
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old_mask)
    assert after == before
    progress = [ln for ln in res.output.splitlines() if "loglikelihood" in ln]
    assert progress and progress[-1].split()[3] == "8/8" and "requests/s" in progress[-1], res.output
    assert "it/s" not in res.output  # lm-eval's own bars went to the log
    assert "Checking cached requests" in (tmp_path / "ev" / "lmdisp.log").read_text()


def test_the_umask_is_read_without_being_set(monkeypatch):
    from lmdisp import runs

    if not Path("/proc/self/status").is_file():
        pytest.skip("reading the umask without setting it needs /proc (Linux)")
    mask = os.umask(0o022)
    os.umask(mask)

    def refuse(*_):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", refuse)
    assert runs._umask() == mask


def test_plain_progress_does_not_repeat_a_stale_logged_value():
    """Off a terminal (accelerate, torchrun, a log file), a line repeats the logged losses only
    when they changed since the last line."""
    from rich.console import Console

    import lmdisp.cli.ui as ui

    bar = ui.PlainProgress()
    bar.console = Console(width=200, record=True, file=open(os.devnull, "w"))
    task = bar.add_task("train", total=50, info="")
    bar.update(task, info="ce 6.8185  lr 1.00e-04")
    for step in range(1, 31):
        bar.update(task, completed=step)
    bar.update(task, info="ce 5.1000  lr 5.00e-05")
    for step in range(31, 51):
        bar.update(task, completed=step)
    for _ in range(6):  # after the last step: the Trainer's last log and end-of-training callbacks
        bar.update(task, completed=50, info="ce 4.2000  lr 0.00e+00")
    bar.stop()
    lines = bar.console.export_text().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("train 50/50 (100%)")
    assert [sum(v in ln for ln in lines) for v in ("ce 6.8185", "ce 5.1000", "ce 4.2000")] == [1, 1, 1]


def test_a_hub_clients_retries_are_notes_on_the_terminal(capsys):
    """datasets retries a broken stream 20 times, 5 s apart, logging each try: without --verbose its
    log goes to the run's log file, so a user would wait minutes in silence; the retries are notes."""
    import logging

    from lmdisp.cli.session import cli_session

    with cli_session():
        logging.getLogger("datasets.utils.file_utils").warning(
            "Got disconnected from remote data host. Retrying in 5sec [3/20]")
        logging.getLogger("datasets.builder").warning("some other notice")
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 2/5].")
    out = capsys.readouterr().out
    assert "note: datasets: Got disconnected from remote data host. Retrying in 5sec [3/20]" in out
    assert "note: huggingface_hub: Retrying in 1s [Retry 2/5]." in out
    assert "some other notice" not in out
    with cli_session():  # outside a command nothing is added: the handler left with the session
        pass
    logging.getLogger("datasets.utils.file_utils").warning("Retrying in 5sec [4/20]")
    assert "[4/20]" not in capsys.readouterr().out
