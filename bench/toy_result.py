"""The README's toy result, from the folder `make toy` just wrote (never typed by hand).

    python bench/toy_result.py results/toy/<stamp>      # `make toy` runs it

Reads the two training runs (`ce/`, `dispersion/`: steps and the last logged cross-entropy
from `metrics.jsonl`, lambda from `config.yaml`) and the measurement of their final models
(`measure/*/layers.csv`: the mean cosine similarity m_l of every layer), writes
`<folder>/toy_result.{json,md}` and, with `--readme` (`make toy README=1`), fills the README block `toy`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

METHODS = ("ce", "dispersion")


def read_training(run: Path) -> dict:
    from lmdisp.config import read_yaml

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in records if "ce" in r][-1]
    cfg = read_yaml(run / "config.yaml")
    return {"steps": max(r["step"] for r in records), "final_ce": last["ce"], "ce_step": last["step"],
            "loss": cfg["loss"], "lambda": cfg["lambda_disp"], "model": cfg["model"]}


def read_measure(folder: Path) -> dict[str, dict]:
    """method -> {mean_cos: [m_0..m_L], repetitions, seq_len} from the measure run's model folders."""
    import pandas as pd

    out = {}
    for summary_path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        method = Path(summary["model"]).parent.name  # <toy>/<method>/final
        layers = pd.read_csv(summary_path.parent / "layers.csv")
        out[method] = {"mean_cos": [round(float(v), 4) for v in layers["mean_cos"]],
                       "repetitions": summary["repetitions"], "seq_len": summary["seq_len"],
                       "spearman_rho": summary["spearman_rho"]}
    return out


def markdown(train: dict, measured: dict) -> str:
    layers = len(measured["ce"]["mean_cos"])
    head = "| run | steps | final CE | " + " | ".join(f"m_{i}" for i in range(layers)) + " | Spearman rho |"
    rows = [head, "|" + "---|" * (layers + 4)]
    for m in METHODS:
        t, r = train[m], measured[m]
        name = m if m == "ce" else f"{m} (lambda {t['lambda']})"
        rows.append(f"| {name} | {t['steps']} | {t['final_ce']:.2f} | "
                    + " | ".join(f"{v:.2f}" for v in r["mean_cos"]) + f" | {r['spearman_rho']:.2f} |")
    r = measured["ce"]
    return ("\n".join(rows) + f"\n\n`{train['ce']['model']}` on the builtin corpus; m_l = mean cosine similarity "
            f"of layer l (0 = embeddings) over {r['repetitions']} texts of {r['seq_len']} tokens; final CE = "
            f"the last logged training cross-entropy (step {train['ce']['ce_step']}). Written by `make toy`.\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the TOYDIR of `make toy`")
    ap.add_argument("--readme", action="store_true", help="also fill the README block (make toy README=1)")
    args = ap.parse_args(argv)
    train = {m: read_training(args.folder / m) for m in METHODS}
    measured = read_measure(args.folder / "measure")
    missing = [m for m in METHODS if m not in measured]
    if missing:
        raise SystemExit(f"{args.folder}/measure has no measurement of {', '.join(missing)}")
    report = {"training": train, "measure": measured}
    publish("toy", report, markdown(train, measured), args.folder / "toy_result", readme=args.readme)


if __name__ == "__main__":
    main()
