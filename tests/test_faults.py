"""Faults at scale (issue 19): preemption (SIGTERM), two writers (the run-folder lock), a damaged
cache, a full disk, a dying rank. Each one: what the user sees, and that nothing is lost."""

import json
import os
import re
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


_LAST_LINE = """
import os, signal, sys, time
from lmdisp import preempt
from lmdisp.errors import RunDirError, Terminated

with preempt.process_handler():  # what the console script does first
    os.kill(os.getpid(), signal.SIGTERM)  # while it parses its arguments: kept, the command never starts
    try:
        with preempt.sigterm_raises():
            print("the command ran")
    except Terminated:
        print("stopped before it started")
    try:
        with preempt.sigterm_raises():
            try:
                raise RunDirError("rank 1 died")  # the error that ends the command...
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # ...and the launcher's SIGTERM while it unwinds
                time.sleep(0.01)
    except RunDirError as exc:
        time.sleep(0.2)  # the signal, delivered again, reaches the process handler: kept
        print(f"error: {exc}")
        code = 2
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as found
sys.exit(code)
"""


def test_a_sigterm_while_a_command_ends_never_cuts_its_last_line():
    """torchrun SIGTERMs the other ranks as soon as one dies: the rank that saw the collective fail
    was killed between restoring its handler and printing why (CI, under xdist), its line lost."""
    res = subprocess.run([sys.executable, "-c", _LAST_LINE], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2 and res.stdout.splitlines() == ["stopped before it started", "error: rank 1 died"], res


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


# ----------------------------------------------------------------------------- a damaged cache

def _corpus(tmp_path, n=400):
    import random

    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "condensation", "dispersion", "layer", "token", "the", "of"]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40))}) + "\n"
                            for _ in range(n)))
    return path


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_token_shard_is_moved_aside_and_rebuilt(tmp_path, tiny_tokenizer, caplog, damage):
    from lmdisp.train.shards import TOKENS, prepare_shards, resolve_source

    src, cache = resolve_source(str(_corpus(tmp_path))), tmp_path / "cache"
    first = prepare_shards(src, tiny_tokenizer, 32, 60, cache_dir=cache)
    expected = first.blocks(0, first.n_blocks)[:]["input_ids"].clone()
    tokens = first.path / TOKENS
    data = bytearray(tokens.read_bytes())
    if damage == "truncated":
        tokens.write_bytes(data[: len(data) // 3])  # what a disk-full copy or a cut rsync leaves
    else:
        data[len(data) // 2] ^= 0x10                # same size, one bit different
        tokens.write_bytes(bytes(data))
    again = prepare_shards(src, tiny_tokenizer, 32, 60, cache_dir=cache)
    assert again.built and again.path == first.path
    assert torch.equal(again.blocks(0, again.n_blocks)[:]["input_ids"], expected)
    what = "has 1280 bytes, 3840 were written" if damage == "truncated" else \
        "does not match the checksum recorded when it was written"
    assert f"token cache {first.path} is damaged (tokens.bin {what}): moved aside to .damaged-" in caplog.text
    assert len(list(first.path.parent.glob(".damaged-blocks-60-*"))) == 1


_BUILD = """
import sys, time
from lmdisp.models import load_tokenizer
from lmdisp.train.shards import prepare_shards, resolve_source
def slow(report):
    time.sleep(2)     # a long build: the other process starts meanwhile
s = prepare_shards(resolve_source(sys.argv[1]), load_tokenizer("tiny-bpe"), 32, 60, cache_dir=sys.argv[2], progress=slow)
print(s.path, s.built, s.blocks(0, s.n_blocks)[:]["input_ids"].sum().item())
"""


@pytest.mark.slow
def test_two_processes_building_the_same_shards_make_one_cache_and_both_read_it(tmp_path):
    corpus, cache = _corpus(tmp_path), tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(corpus), str(cache)], env=ENV, cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0][0] == outs[1][0] and outs[0][2] == outs[1][2]  # one folder, the same tokens read
    assert sorted(o[1] for o in outs) == ["False", "True"]        # one built it, the other waited and read it
    (folder,) = {Path(o[0]).parent for o in outs}
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == ["blocks-60"]


def _checkpoints(run, steps):
    """A run folder with complete, recorded checkpoints at `steps` (as `save_checkpoint` leaves them)."""
    from lmdisp import integrity

    for step in steps:
        ckpt = run / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(os.urandom(4096))
        (ckpt / "optimizer.pt").write_bytes(os.urandom(8192))
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        integrity.record(ckpt)
    return run / "checkpoints"


class _OneProcess:
    is_main_process = True

    def wait_for_everyone(self):
        pass


def test_a_checkpoint_with_a_missing_shard_is_moved_aside_and_the_one_before_is_used(tmp_path, caplog):
    from lmdisp.train.folder import resume_point

    ckpts = _checkpoints(tmp_path / "run", [4, 8])
    (ckpts / "checkpoint-8" / "model.safetensors").unlink()
    assert resume_point(tmp_path / "run", _OneProcess()) == str(ckpts / "checkpoint-4")
    assert f"{ckpts / 'checkpoint-8'} is damaged (model.safetensors is missing): moved aside, resuming from the " \
           "checkpoint before it" in caplog.text
    assert [p.name.split("-1")[0] for p in ckpts.iterdir()] != [] and list(ckpts.glob(".damaged-checkpoint-8-*"))


def test_a_named_damaged_checkpoint_is_refused_in_one_line(tmp_path, run_cli):
    from lmdisp.train.folder import chosen_checkpoint

    ckpts = _checkpoints(tmp_path / "run", [4])
    data = bytearray((ckpts / "checkpoint-4" / "optimizer.pt").read_bytes())
    data[100] ^= 1
    (ckpts / "checkpoint-4" / "optimizer.pt").write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"resume_from=checkpoint-4: .*checkpoint-4 is damaged \(optimizer.pt does "
                                          r"not match the checksum recorded when it was written\); choose another"):
        chosen_checkpoint(tmp_path / "run", "checkpoint-4")


# ----------------------------------------------------------------------------- a full disk

def test_a_checkpoint_save_without_space_is_removed_and_the_one_before_kept(tmp_path, monkeypatch):
    import errno

    from lmdisp import integrity
    from lmdisp.errors import DiskFull

    real = torch.save

    def full_at_step_8(obj, f, *a, **k):  # the disk fills while checkpoint-8's optimiser state is written
        if "checkpoint-8" in str(f) and "optimizer" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_step_8)
    with pytest.raises(DiskFull) as err:
        run_train(_cfg(tmp_path / "run", save_steps=4))
    ckpts = tmp_path / "run" / "checkpoints"
    assert str(err.value).startswith(f"cannot write {ckpts / 'checkpoint-8'}: no space left on the device; it "
                                     "needs about ")
    assert str(err.value).endswith("nothing half-written was kept; the last complete checkpoint is checkpoint-4; "
                                   "free space and continue with --resume")
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]
    assert integrity.verify(ckpts / "checkpoint-4") is None and (ckpts / "checkpoint-4" / integrity.RECORD).is_file()
    assert not (tmp_path / "run" / locks.LOCK_NAME).exists()


_LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from lmdisp.cli.main import main
sys.argv = ["lmdisp", *sys.argv[2:]]
main()
"""


def _limited(limit, *args):
    """`lmdisp ARGS` with a real file-size limit (RLIMIT_FSIZE: a write past it fails with EFBIG)."""
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *map(str, args)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_real_file_size_limit_gives_one_line_and_leaves_nothing_half_written(tmp_path):
    corpus = _corpus(tmp_path, n=2000)
    res = _limited(20_000, "prepare", "--model", "random:tiny-gpt2", "--dataset", corpus, "--context-length", "32",
                   "--train-tokens", "40k", "--set", f"cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert re.fullmatch(rf"error: cannot write {tmp_path / 'cache'}/c.jsonl-ctx32-[0-9a-f]+: the file-size limit "
                        r"\(ulimit -f\) was reached; it needs about 80.5 KB; nothing half-written was kept; free space "
                        "there or choose another cache_dir", line), line
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    out = tmp_path / "m"
    res = _limited(100_000, "measure", "random:tiny-gpt2", "--dataset", "builtin", "--repetitions", "2",
                   "--max-length", "128", "--no-plots", "--save-matrices", "--output", out)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {out / 'random-tiny-gpt2' / 'matrices.npz'}: the file-size limit")
    assert not list(out.rglob("matrices.npz")) and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_a_request_cache_cut_mid_write_is_moved_aside_and_asked_again(tmp_path, caplog):
    import shutil

    from bench.eval_speed import write_task
    from lmdisp.eval.config import EvaluateConfig
    from lmdisp.eval.harness import CACHE_DIR, run_evaluate

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, 6)

    def cfg(out):
        return EvaluateConfig(model="random:tiny-gpt2", tasks="bench_mc", include_path=[str(tasks)], batch_size=1,
                              device="cpu", seed=1, output=str(out))

    full = run_evaluate(cfg(tmp_path / "full"))
    cut = tmp_path / "cut"  # a killed evaluation's folder: only its request cache, the database cut short
    shutil.copytree(tmp_path / "full" / CACHE_DIR, cut / CACHE_DIR)
    (db,) = (cut / CACHE_DIR).glob("requests*.db")
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    again = run_evaluate(cfg(cut))
    assert f"request cache {db} is damaged (database disk image is malformed): moved aside to .damaged-" in caplog.text
    cols = ["task", "metric", "value", "n"]
    assert again.table[cols].equals(full.table[cols])
    assert len(list((cut / CACHE_DIR).glob(".damaged-requests*"))) == 1


def test_a_truncated_converted_gguf_cache_is_converted_again(tmp_path, tiny_gpt2_dir, monkeypatch, caplog):
    import transformers

    from lmdisp import integrity
    from lmdisp.models import gguf_to_folder

    conversions = []
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def model(path, gguf_file=None, **kw):  # de-quantising: the tiny GPT-2 stands in for the GGUF's weights
        conversions.append(gguf_file)
        return real_model(str(tiny_gpt2_dir))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda p, gguf_file=None, **k: real_tok(
        str(tiny_gpt2_dir)))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    folder = gguf_to_folder(gguf)
    assert gguf_to_folder(gguf) == folder and len(conversions) == 1  # reused while intact
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])          # a copy cut short
    assert gguf_to_folder(gguf) == folder and len(conversions) == 2
    assert f"converted GGUF cache {folder} is damaged (model.safetensors has {size // 2} bytes, {size} were " \
           f"written): moved aside to .damaged-{folder.name}-" in caplog.text
    assert integrity.verify(folder) is None and weights.stat().st_size == size


# ----------------------------------------------------------------------------- a dying rank

def _torchrun(out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmdisp", "midtrain",
            *FLAGS[:6], "--batch-size", "2", *FLAGS[8:], "--train-tokens", str(40 * 128), "--save-steps", "20",
            "--logging-steps", "5", "--output", str(out), *extra]


def _rank_pid(launcher: int, rank: str) -> int:
    for child in subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError("no such rank")


@pytest.mark.slow
def test_a_dying_rank_stops_the_other_in_one_line_and_resume_reaches_the_same_weights(tmp_path):
    import socket

    from lmdisp import integrity

    full = subprocess.run(_torchrun(tmp_path / "full"), env=ENV, cwd=REPO, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(out), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    record = out / "checkpoints" / "checkpoint-20" / integrity.RECORD
    deadline = time.time() + 300
    while not record.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim = _rank_pid(proc.pid, "1")
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - killed < 60 and proc.returncode != 0
    assert not (out / "final").exists(), "the run finished before the rank was killed"
    ours = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert ours == [f"error: rank 1 (pid {victim} on host {socket.gethostname()}) died; rank 0 stopped too "
                    f"(collective timeout 1800 s); the last complete checkpoint is {record.parent}; continue, under "
                    f"the same launcher, with: lmdisp midtrain --config {out / 'config.yaml'} --output {out} "
                    "--resume"], err[-3000:]
    assert integrity.verify(record.parent) is None
    resumed = subprocess.run(_torchrun(out, "--resume"), env=ENV, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same(_weights(out), _weights(tmp_path / "full"))


def test_a_full_disk_anywhere_else_is_one_line_at_the_cli(run_cli, monkeypatch, tmp_path):
    import errno
    import sqlite3

    import lmdisp.measure

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))

    monkeypatch.setattr(lmdisp.measure, "run_measure", full)
    res = run_cli("measure", "random:tiny-gpt2", "--dataset", "builtin")
    assert res.code == 2 and res.err == (f"error: cannot write {tmp_path / 'metrics.jsonl'}: no space left on the "
                                         "device; free space and run the command again (a training run continues "
                                         "with --resume, an evaluation with the same --output)\n")

    def sqlite_full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(lmdisp.measure, "run_measure", sqlite_full)
    res = run_cli("measure", "random:tiny-gpt2", "--dataset", "builtin")
    assert res.code == 2 and res.err.startswith("error: cannot write lm-eval's request cache: no space left")


@pytest.mark.slow
def test_sigterm_stops_evaluate_keeping_its_answers_and_a_rerun_finishes_with_the_same_numbers(tmp_path):
    import sqlite3

    from bench.eval_speed import write_task
    from lmdisp.eval.harness import CACHE_DIR

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, 150)

    def cmd(out):
        return [sys.executable, "-m", "lmdisp", "evaluate", "--model", "random:tiny-gpt2", "--tasks", "bench_mc",
                "--include-path", str(tasks), "--batch-size", "1", "--device", "cpu", "--seed", "1", "--output", str(out)]

    def cached(out):
        try:
            (db,) = (out / CACHE_DIR).glob("requests*.db")
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                return con.execute("select count(*) from unnamed").fetchone()[0]
        except (ValueError, sqlite3.Error):
            return 0

    out = tmp_path / "stopped"
    proc = subprocess.Popen(cmd(out), env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while cached(out) < 100 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.startswith("interrupted: ") and "Traceback" not in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    kept = cached(out)
    assert 100 <= kept < 600 and not (out / "tasks.csv").exists()  # its answers kept, the run not finished
    again = subprocess.run(cmd(out), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    full = subprocess.run(cmd(tmp_path / "full"), env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and full.returncode == 0, again.stderr[-2000:]
    import pandas as pd

    cols = ["task", "metric", "value", "n"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "tasks.csv")[cols], pd.read_csv(tmp_path / "full" / "tasks.csv")[cols])


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


_SIGTERM_IN_A_FINALISER = """
import gc, os, signal, time
from lmdisp import preempt

class Sink:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)   # the signal lands while a finaliser runs
        time.sleep(0.01)

with preempt.sigterm_raises():
    try:
        Sink()
        gc.collect()
        time.sleep(5)
        print("ran on")
    except KeyboardInterrupt as exc:
        print("stopped:", exc)
"""


def test_sigterm_during_a_finaliser_still_stops_the_command():
    """An exception raised inside __del__ is dropped by Python; the signal is delivered again."""
    res = subprocess.run([sys.executable, "-c", _SIGTERM_IN_A_FINALISER], env=ENV, cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.stdout.strip() == "stopped: stopped by SIGTERM", res.stdout + res.stderr[-2000:]
