"""`lmdisp report` never averages runs scored by different backends or dtypes into one row."""

import json

from lmdisp.eval.report import ReportConfig, run_report
from tests.test_report import fake_run


def _set(folder, backend, dtype):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["backend"] = backend
    manifest["model_info"] = {**(manifest.get("model_info") or {}), "dtype": dtype}
    path.write_text(json.dumps(manifest))


def test_mixed_backends_or_dtypes_are_separate_labelled_rows(tmp_path):
    root = tmp_path / "evals"
    root.mkdir()
    values = {1: 60.0, 2: 62.0, 3: 70.0, 4: 72.0}
    for seed, v in values.items():
        fake_run(root / f"ce-{seed}", "gpt2", "ce", seed, {"piqa": v})
        _set(root / f"ce-{seed}", "hf" if seed <= 2 else "vllm", "bfloat16")
    for seed in (1, 2):
        fake_run(root / f"disp-{seed}", "gpt2", "dispersion", seed, {"piqa": 61.0})
        _set(root / f"disp-{seed}", "hf", "bfloat16")
    run = run_report(ReportConfig(runs=[str(root)], output=str(tmp_path / "r"), plots=False))
    rows = run.values.set_index("method")
    assert rows.loc["ce [hf, bfloat16]", "piqa"] == 61.0 and rows.loc["ce [vllm, bfloat16]", "piqa"] == 71.0
    assert "ce" not in rows.index and rows.loc["dispersion", "piqa"] == 61.0  # an unmixed row keeps its label
    assert any("different settings" in n and "vllm" in n for n in run.notes)
    # dtype alone splits a row too
    _set(root / "disp-2", "hf", "float32")
    run = run_report(ReportConfig(runs=[str(root)], output=str(tmp_path / "r2"), plots=False))
    assert {"dispersion [hf, bfloat16]", "dispersion [hf, float32]"} <= set(run.values["method"])
