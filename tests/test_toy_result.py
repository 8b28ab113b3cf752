"""`bench/toy_result.py`: the README's toy block is built from the run folders `make toy`
writes (numbers read from the files, never typed), and only the block between its markers
changes."""

import json
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import toy_result  # noqa: E402
from common import update_readme  # noqa: E402


def _fake_toy(root: Path) -> dict:
    means = {"ce": [0.11, 0.45, 0.70], "dispersion": [0.12, 0.03, 0.04]}
    for i, (method, ce) in enumerate((("ce", 6.34), ("dispersion", 6.31))):
        run = root / method
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"loss": method, "lambda_disp": 0.1,
                                                         "model": "random:tiny-gpt2"}))
        records = [{"step": 10, "ce": 9.0}, {"step": 190, "ce": ce}, {"step": 195, "train_runtime": 1.0}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        folder = root / "measure" / f"model-{i}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"model": str(run / "final"), "repetitions": 100,
                                                         "seq_len": 64, "spearman_rho": 0.5 - i}))
        pd.DataFrame({"layer": range(3), "mean_cos": means[method]}).to_csv(folder / "layers.csv", index=False)
    return means


def test_block_is_built_from_the_run_files(tmp_path):
    means = _fake_toy(tmp_path / "toy")
    toy_result.main([str(tmp_path / "toy")])  # the README block only with --readme
    md = (tmp_path / "toy" / "toy_result.md").read_text()
    report = json.loads((tmp_path / "toy" / "toy_result.json").read_text())
    assert report["training"]["ce"]["steps"] == 195 and report["training"]["dispersion"]["final_ce"] == 6.31
    assert report["measure"]["dispersion"]["mean_cos"] == means["dispersion"]
    assert "| ce | 195 | 6.34 | 0.11 | 0.45 | 0.70 | 0.50 |" in md
    assert "| dispersion (lambda 0.1) | 195 | 6.31 | 0.12 | 0.03 | 0.04 | -0.50 |" in md
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- bench:toy -->\nold numbers\n<!-- /bench:toy -->\nafter\n")
    assert update_readme("toy", md, readme)
    text = readme.read_text()
    assert "old numbers" not in text and md.strip() in text
    assert text.startswith("before\n<!-- bench:toy -->\n") and text.endswith("<!-- /bench:toy -->\nafter\n")
