"""`bench/gpu.py --smoke`: the GPU benchmark runs end to end on the CPU at tiny sizes, so it
cannot rot between the occasions a GPU runs it for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--output", str(tmp_path / "gpu")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["smoke"] and (tmp_path / "gpu.md").is_file()
    m = report["measure"]
    assert set(m["seconds"]) >= {"forward passes (float32)", "lmdisp (float32)", "lmdisp (bfloat16)",
                                 "forward passes (bfloat16)"}
    if m["parity"] is not None:  # the authors' package is installed: its numbers are lmdisp's
        assert m["parity"]["pass"], m["parity"]
    t = report["train"]
    assert set(t["step_s"]) == {"plain", "ce", "dispersion", "decorrelation", "l2-repel", "orthogonalization",
                                "infonce-cos"}
    assert all(s > 0 for s in t["step_s"].values()) and "dispersion / ce" in t["ratios"]
    assert report["eval"]["same_acc"]
