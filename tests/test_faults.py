"""Faults at scale (issue 19): preemption (SIGTERM), two writers (the run-folder lock), a damaged
cache, a full disk, a dying rank. Each one: what the user sees, and that nothing is lost."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from lmdisp import locks
from lmdisp.errors import RunDirError, Terminated
from lmdisp.train.config import TrainConfig
from lmdisp.train.run import run_train

REPO = Path(__file__).resolve().parent.parent
TINY = dict(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=4, grad_accum=1,
            lr=1e-3, gradient_checkpointing=False, condensation_every=0, logging_steps=1, save_steps=1000,
            warmup_ratio=0.0, loss="dispersion", train_tokens=12 * 128)
FLAGS = ["--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32", "--batch-size", "4",
         "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "0", "--loss", "dispersion",
         "--train-tokens", str(12 * 128), "--lr", "0.001", "--set", "warmup_ratio=0", "--logging-steps", "1",
         "--save-steps", "1000"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _cfg(out, **kw):
    return TrainConfig(**{**TINY, "output": str(out), **kw})


def _weights(run):
    return load_file(str(Path(run) / "final" / "model.safetensors"))


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


class _SigtermAt(TrainerCallback):
    """Send this process SIGTERM during step `step` (as a scheduler would, mid-step)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# ----------------------------------------------------------------------------- preemption

@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_reaches_the_same_weights(tmp_path):
    full = run_train(_cfg(tmp_path / "full"))
    with pytest.raises(Terminated) as err:
        run_train(_cfg(tmp_path / "stopped"), callbacks=[_SigtermAt(5)])
    msg = str(err.value)
    ckpt = tmp_path / "stopped" / "checkpoints" / "checkpoint-5"
    assert f"stopped by SIGTERM at step 5 of 12; checkpoint saved in {ckpt}" in msg
    assert f"--output {tmp_path / 'stopped'} --resume" in msg and err.value.exit_code == 143
    assert (ckpt / "trainer_state.json").is_file() and not (tmp_path / "stopped" / "final").exists()
    assert not (tmp_path / "stopped" / locks.LOCK_NAME).exists()  # the folder is free for the resume
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # the process's handler is back
    resumed = run_train(_cfg(tmp_path / "stopped", resume=True))
    assert resumed.steps == full.steps == 12
    _same(_weights(resumed.path), _weights(full.path))
    records = [json.loads(x) for x in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "ce" in r]
    assert steps == list(range(1, 13))  # none lost, none logged twice


# ----------------------------------------------------------------------------- two writers

_HOLD = """
import sys, time
from lmdisp import locks
locks.acquire(sys.argv[1], "midtrain")
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder():
    """Another process holding a folder's lock (as a running `lmdisp midtrain` does)."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                                env=ENV)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _unfinished_run(folder):
    """A run folder as a stopped run leaves it (config.yaml, a `running` manifest)."""
    from lmdisp.config import as_dict
    from lmdisp.runs import RunDir

    cfg = _cfg(folder)
    folder.mkdir()
    RunDir(folder, "midtrain").write_manifest(as_dict(cfg), status="running")


def test_a_second_run_into_a_running_runs_folder_is_refused_naming_it(tmp_path, run_cli, holder):
    import socket

    run = tmp_path / "run"
    _unfinished_run(run)
    proc = holder(run)
    res = run_cli("midtrain", *FLAGS, "--output", run, "--resume")
    assert res.code == 2 and "Traceback" not in res.err
    assert (f"{run} is in use by another lmdisp process (pid {proc.pid} on host {socket.gethostname()}, midtrain "
            "started ") in res.err and "wait for it to end, or choose another --output" in res.err
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    out = tmp_path / "measured"
    out.mkdir()
    holder(out)
    res = run_cli("measure", "random:tiny-gpt2", "--dataset", "builtin", "--output", out)
    assert res.code == 2 and f"{out} is in use by another lmdisp process" in res.err


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_message(tmp_path, holder, caplog):
    run = tmp_path / "run"
    run.mkdir()
    proc = holder(run)
    proc.kill()
    proc.wait()
    assert (run / locks.LOCK_NAME).is_file()  # what kill -9 leaves behind
    locks.acquire(run, "midtrain")
    assert f"taking over the lock left by pid {proc.pid} on host" in caplog.text
    assert "which is no longer running" in caplog.text
    assert json.loads((run / locks.LOCK_NAME).read_text())["pid"] == os.getpid()
    locks.release(run)
    assert not (run / locks.LOCK_NAME).exists()


@pytest.mark.slow
def test_sigterm_to_the_cli_exits_143_with_the_command_that_continues(tmp_path):
    """The real signal from outside, as Slurm sends it: one line, exit 143, the printed command resumes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lmdisp", "midtrain", *FLAGS, "--train-tokens", str(40 * 128), "--output", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # paused (lock held) while a re-queued copy of the job starts
    second = subprocess.run(cmd[:-2] + ["--output", str(out), "--resume"], env=ENV, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    proc.send_signal(signal.SIGCONT)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    stopped_in = time.time() - sent
    assert second.returncode == 2 and f"{out} is in use by another lmdisp process (pid {proc.pid}" in second.stderr
    assert proc.returncode == 143, err[-2000:]
    line = [ln for ln in err.splitlines() if "SIGTERM" in ln]
    assert len(line) == 1 and line[0].startswith("interrupted: midtrain stopped by SIGTERM at step "), err[-2000:]
    assert "Traceback" not in err and stopped_in < 60
    resume = line[0].split("continue with: ")[1].split()
    assert resume[:2] == ["lmdisp", "midtrain"] and resume[-1] == "--resume"
    step = int(line[0].split("at step ")[1].split()[0])
    assert (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    done = subprocess.run([sys.executable, "-m", "lmdisp", *resume[1:]], env=ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "manifest.json").read_text())
    assert state["status"] == "finished" and state["steps"] == 40


def test_sigterm_stops_measure_keeping_the_models_it_finished(tmp_path, run_cli, monkeypatch):
    import lmdisp.measure.run as measure_run

    real, calls = measure_run.load_model, []

    def load_then_sigterm(spec, **kw):  # SIGTERM arrives while the second model loads
        calls.append(spec)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(spec, **kw)

    monkeypatch.setattr(measure_run, "load_model", load_then_sigterm)
    out = tmp_path / "m"
    res = run_cli("measure", "random:tiny-gpt2", "random:tiny-llama", "--dataset", "builtin", "--repetitions", "2",
                  "--max-length", "32", "--no-plots", "--output", out)
    assert res.code == 143 and "SIGTERM" in res.err and "Traceback" not in res.err, res.err
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert (out / "random-tiny-gpt2" / "summary.json").is_file()  # the finished model is kept
    assert not (out / "random-tiny-llama").exists() and not (out / locks.LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


_FORKED_UNDER_THE_FLAG = """
import multiprocessing as mp, time
from lmdisp import preempt
with preempt.graceful():
    child = mp.get_context("fork").Process(target=time.sleep, args=(20,), daemon=True)
    child.start()
    time.sleep(0.5)
    child.terminate()          # SIGTERM, as Pool.terminate() sends lm-eval's bootstrap workers
    child.join(10)
    print(child.exitcode, preempt.requested())
"""


def test_a_process_forked_inside_training_still_ends_on_sigterm():
    """Inside trainer.train() SIGTERM only sets a flag; a process forked there (lm-eval's
    bootstrap Pool for a perplexity stderr in the periodic evaluation, DataLoader workers)
    inherits the handler. It must still end on SIGTERM, or Pool.terminate() waits forever (seen:
    a training run with eval_tasks hung in lm-eval's bootstrap_stderr under load)."""
    res = subprocess.run([sys.executable, "-c", _FORKED_UNDER_THE_FLAG], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert res.stdout.split() == ["-15", "False"], res.stdout + res.stderr
