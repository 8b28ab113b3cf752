"""A killed `lmdisp evaluate` resumes from lm-eval's request cache in its run folder."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.eval_speed import write_task
from lmdisp.errors import RunDirError
from lmdisp.eval.config import EvaluateConfig
from lmdisp.eval.harness import CACHE_DIR, run_evaluate

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = 150


def _cfg(task_dir, output, **kw):
    return EvaluateConfig(**{"model": "random:tiny-gpt2", "tasks": "bench_mc", "include_path": [str(task_dir)],
                             "batch_size": 1, "device": "cpu", "seed": 1, "output": str(output), **kw})


def _cached(folder: Path) -> int:
    dbs = list((folder / CACHE_DIR).glob("requests*.db"))
    if not dbs:
        return 0
    try:
        with sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from unnamed").fetchone()[0]
    except sqlite3.Error:  # created but no table yet
        return 0


@pytest.fixture
def counted(monkeypatch):
    """Requests that reach the model (past lm-eval's cache)."""
    from lm_eval.models.huggingface import HFLM

    seen = {"n": 0}
    real = HFLM.loglikelihood

    def loglikelihood(self, requests, *a, **k):
        seen["n"] += len(requests)
        return real(self, requests, *a, **k)

    monkeypatch.setattr(HFLM, "loglikelihood", loglikelihood)
    return seen


@pytest.mark.slow
def test_a_killed_evaluation_resumes_with_the_same_numbers_and_fewer_model_calls(tmp_path, counted):
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    write_task(task_dir, EXAMPLES)
    total = EXAMPLES * 4
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmdisp", "evaluate", "--model", "random:tiny-gpt2",
                             "--tasks", "bench_mc", "--include-path", str(task_dir), "--batch-size", "1",
                             "--device", "cpu", "--seed", "1", "--output", str(killed)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _cached(killed) < total // 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _cached(killed)
    assert 0 < done < total, f"killed with {done} of {total} answers cached: not during the task"
    assert not (killed / "tasks.csv").exists()

    with pytest.raises(RunDirError, match="another model"):  # another model never reads these answers
        run_evaluate(_cfg(task_dir, killed, model="random:tiny-llama"))
    assert counted["n"] == 0

    resumed = run_evaluate(_cfg(task_dir, killed))
    assert done <= total - counted["n"] < total  # the cached answers were not asked again
    asked_on_resume, counted["n"] = counted["n"], 0
    full = run_evaluate(_cfg(task_dir, tmp_path / "full"))
    assert counted["n"] == total and asked_on_resume < total
    cols = ["task", "metric", "value", "stderr", "n"]
    pd.testing.assert_frame_equal(resumed.table[cols], full.table[cols])
    assert (killed / "tasks.csv").is_file() and (killed / CACHE_DIR / "identity.json").is_file()


def test_a_failed_evaluation_leaves_no_cache_folder(tmp_path, monkeypatch):
    """A model that fails on its first request: lm-eval has made its (empty) request database
    and the run folder exists, yet nothing is left behind, since nothing could be resumed."""
    from lm_eval.models.huggingface import HFLM

    def fail(*a, **k):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(HFLM, "loglikelihood", fail)
    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    write_task(task_dir, 4)
    with pytest.raises(RuntimeError, match="the model failed"):
        run_evaluate(_cfg(task_dir, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
