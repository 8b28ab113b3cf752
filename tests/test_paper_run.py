"""`lmdisp paper --scale smoke` for real: killed with SIGKILL part-way and resumed to a complete
report, a rerun of the finished plan that does nothing in under a minute, the report's tables
equal to `lmdisp report`'s, the claims equal to an independent computation, submitit's local
executor (real subprocesses) giving the same numbers, and the report in headless Chromium."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _paper(root: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdisp", "paper", "--scale", "smoke", "--output", str(root),
                           *extra], capture_output=True, text=True, env=ENV, timeout=timeout)


def _done(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root / ".jobs")): json.loads(p.read_text())["finished"]
            for p in (root / ".jobs").rglob("*.done.json")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Start the smoke plan, SIGKILL its process group once a mid-training job has started, rerun."""
    root = tmp_path_factory.mktemp("paper") / "smoke"
    proc = subprocess.Popen([sys.executable, "-m", "lmdisp", "paper", "--scale", "smoke", "--output", str(root)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = root / ".jobs" / "table2" / "ce-seed1.started.json"
    deadline = time.time() + 600
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _done(root)
    res = _paper(root)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return root, before, res.stdout


def test_killed_plan_resumes_to_a_complete_report_without_redoing_complete_jobs(smoke):
    root, before, out = smoke
    after = _done(root)
    assert "base.done.json" in before and len(after) == 12
    assert all(after[k] == v for k, v in before.items())  # complete jobs were skipped, not rerun
    assert f"{len(before)} already complete" in out
    md = (root / "report.md").read_text()
    assert "12 of 12 jobs complete" in md and (root / "report.html").is_file()


def test_rerun_of_a_finished_plan_does_nothing_in_under_a_minute_and_writes_the_same_report(smoke):
    root, _, _ = smoke
    first = (root / "report.md").read_text()
    t0 = time.perf_counter()
    res = _paper(root)
    assert res.returncode == 0 and time.perf_counter() - t0 < 60
    assert "0 job(s) run, 12 already complete" in res.stdout
    strip = lambda s: [ln for ln in s.splitlines() if "jobs complete; written" not in ln]  # noqa: E731
    assert strip((root / "report.md").read_text()) == strip(first)


def test_report_tables_are_lmdisp_reports_output_for_the_same_folders(smoke, tmp_path):
    from lmdisp.eval.report import ReportConfig, run_report

    root, _, _ = smoke
    evals = sorted(str(p) for p in (root / "table2").glob("eval-*-seed1"))
    run = run_report(ReportConfig(runs=evals, select="best", output=str(tmp_path / "again")))
    again = (run.path / "table.md").read_text().split("\n\n")[0]  # the table itself (no folder names)
    assert again in (root / "report.md").read_text()


def test_claims_are_the_numbers_computed_independently(smoke):
    root, _, _ = smoke
    values = pd.read_csv(root / "table2" / "report" / "table_values.csv")
    avg = lambda m: float(np.mean([float(x) for x in str(values.loc[values.method == m, "seed_averages"].iloc[0])  # noqa: E731
                                   .split(",")]))
    claims = (root / "claims.md").read_text()
    line = next(ln for ln in claims.splitlines() if ln.startswith("- **Dispersion vs ce"))
    assert f"dispersion {avg('dispersion'):.2f} vs {avg('ce'):.2f}" in line
    models = pd.read_csv(root / "fig3" / "measure" / "models.csv")
    rho = models["spearman_rho"].tolist()
    line = next(ln for ln in claims.splitlines() if ln.startswith("- **Feature 2"))
    assert f"goes from {rho[0]:+.3f}" in line and f"a change of {rho[-1] - rho[0]:+.3f}" in line


def test_submitit_local_executor_runs_the_same_jobs_to_the_same_numbers(smoke, tmp_path):
    pytest.importorskip("submitit")
    root, _, _ = smoke
    res = _paper(tmp_path / "sub", "--only", "fig3", "--executor", "submitit-local", "--no-report")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "4 job(s) run" in res.stdout and list((tmp_path / "sub" / ".submitit").iterdir())
    mine = json.loads((tmp_path / "sub" / "fig3" / "figure" / "figure.json").read_text())["points"]
    local = json.loads((root / "fig3" / "figure" / "figure.json").read_text())["points"]
    assert [p["spearman_rho"] for p in mine] == pytest.approx([p["spearman_rho"] for p in local], abs=1e-6)


def test_report_in_a_real_browser(smoke):
    from lmdisp.paper.browser import check_report, chromium

    if chromium() is None and not os.environ.get("LMDISP_REQUIRE_BROWSER"):
        pytest.skip("chromium is not installed (make test installs it and requires this test)")
    root, _, _ = smoke
    seen = check_report(root / "report.html")
    assert seen["console"] == []
    assert seen["images"] and all(i["ok"] for i in seen["images"]), seen["images"]
    assert seen["sections"] == ["summary", "claims", "fig2", "figS2", "fig3", "fig4", "fig5", "fig7", "table2",
                                "table3", "table4", "table5", "provenance"]
    assert Path(seen["screenshot"]).stat().st_size > 10_000 and Path(seen["screenshot"]).parent == root
