"""The paper's claims, each judged from this run's numbers in one sentence: direction, effect
size, a p-value or interval, and the scale. Nothing is written in advance: a claim whose data
is missing says so. Sentences are lists of text and (number, source file) pieces, so the report
can link every number to the file it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Piece = str | tuple[str, str]  # text, or (number as text, source path)


@dataclass
class Claim:
    key: str
    paper: str
    verdict: str = "not tested"  # supported | not supported | same direction, not significant | not tested
    pieces: list[Piece] = field(default_factory=list)

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p[0] for p in self.pieces)


def _n(value: float, source: Path | str, fmt: str = "{:+.3f}") -> tuple[str, str]:
    return (fmt.format(value), str(source))


def _fig(root: Path, art: str) -> tuple[dict | None, Path]:
    path = root / art / "figure" / "figure.json"
    return (json.loads(path.read_text()) if path.is_file() else None), path


def _kendall(x, y) -> tuple[float, float]:
    from scipy.stats import kendalltau

    res = kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)


def _last_cos(points: list[dict]) -> list[float | None]:
    """Each point's last-layer mean cosine similarity, from the models.csv it came from."""
    import pandas as pd

    tables: dict[str, object] = {}
    out = []
    for p in points:
        if p["source"] not in tables:
            tables[p["source"]] = pd.read_csv(p["source"]) if Path(p["source"]).is_file() else None
        t = tables[p["source"]]
        hit = t[t["model"] == p["model"]] if t is not None else None
        out.append(float(hit["mean_cos_last"].iloc[0]) if hit is not None and len(hit) else None)
    return out


def _trend_claim(claim: Claim, points: list[dict], src: Path, what: str, scale: str, order_by: str) -> Claim:
    """rho falls along `points` (ordered): Kendall's tau between the order and rho, and the change.
    When rho is the same everywhere (a rank statistic saturates at +1 on a few layers), the
    last layer's mean cosine similarity decides, and the sentence says so."""
    rho = [p["spearman_rho"] for p in points]
    flat = max(rho) - min(rho) < 1e-9
    tau, p = _kendall(np.arange(len(rho)), rho) if len(rho) > 2 and not flat else (float("nan"), float("nan"))
    drop = rho[-1] - rho[0]
    claim.pieces = [f"{what}: the condensation score (Spearman ρ of cosine vs depth) goes from ", _n(rho[0], src),
                    f" ({points[0]['label']}) to ", _n(rho[-1], src), f" ({points[-1]['label']}), a change of ",
                    _n(drop, src), f" along {len(rho)} {order_by}"]
    if len(rho) > 2 and not flat:
        claim.pieces += [" (Kendall τ of ρ vs order ", _n(tau, src), ", p = ", _n(p, src, "{:.3g}"), ")"]
    claim.verdict = "supported" if drop < 0 and (len(rho) < 3 or tau < 0) else "not supported"
    last = _last_cos(points)
    if flat and None not in last:
        src_csv = points[0]["source"]
        tau_c, p_c = _kendall(np.arange(len(last)), last) if len(last) > 2 else (float("nan"), float("nan"))
        claim.verdict = "supported" if last[-1] < last[0] and (len(last) < 3 or tau_c < 0) else "not supported"
        claim.pieces += ["; ρ is saturated, so the last layer's mean cosine decides: ", _n(last[0], src_csv, "{:.3f}"),
                         " to ", _n(last[-1], src_csv, "{:.3f}")]
        if len(last) > 2:
            claim.pieces += [" (Kendall τ ", _n(tau_c, src_csv), ", p = ", _n(p_c, src_csv, "{:.3g}"), ")"]
    claim.pieces.append(f"; {claim.verdict} at {scale} scale.")
    return claim


def feature_claims(root: Path, scale: str) -> list[Claim]:
    out = []
    fig2, src2 = _fig(root, "fig2")
    fig3, src3 = _fig(root, "fig3")
    c1 = Claim("Feature 1", "More severe in smaller models than in larger ones (Figure 2).")
    groups = {}
    for pt in (fig2 or {}).get("points", []):
        groups.setdefault(pt["group"], []).append(pt)
    sized = {g: sorted(v, key=lambda p: p["params"]) for g, v in groups.items() if len({p["params"] for p in v}) > 2}
    if sized:
        falls = {g: _kendall([p["params"] for p in v], [p["spearman_rho"] for p in v]) for g, v in sized.items()}
        neg = [g for g, (t, _) in falls.items() if t < 0]
        c1.verdict = "supported" if len(neg) > len(falls) / 2 else "not supported"
        c1.pieces = [f"Across {len(falls)} families, ρ falls with model size in {len(neg)} "]
        for g, (t, p) in falls.items():
            c1.pieces += [f"({g}: Kendall τ of ρ vs size ", _n(t, src2), ", p = ", _n(p, src2, "{:.3g}"), ") "]
        c1.pieces.append(f"; {c1.verdict} at {scale} scale.")
    elif fig3:
        _trend_claim(c1, fig3["points"], src3, "By MLP width (the controlled models of Figure 3)", scale, "widths")
    out.append(c1)
    c2 = Claim("Feature 2", "Reproducible with only the MLP width changed (Figure 3).")
    out.append(_trend_claim(c2, fig3["points"], src3, "Widening only the MLP", scale, "widths") if fig3 else c2)
    fig4, src4 = _fig(root, "fig4")
    c3 = Claim("Feature 3", "Present at initialisation, reduced by pre-training (Figure 4).")
    out.append(_trend_claim(c3, fig4["points"], src4, "From initialisation through pre-training", scale,
                            "checkpoints") if fig4 else c3)
    pairs = [(p, q) for p in (fig2 or {}).get("points", []) for q in fig2["points"]
             if q["model"] == f"random:{p['model']}"]
    for real, init in pairs:  # mini: a trained model next to a fresh initialisation of its architecture
        c3.pieces += [f" {real['model']} as trained has ρ ", _n(real["spearman_rho"], src2),
                      ", a fresh initialisation of it ", _n(init["spearman_rho"], src2), "."]
    out.append(feature4(root, scale))
    return out


def feature4(root: Path, scale: str) -> Claim:
    fig5, src = _fig(root, "fig5")
    c = Claim("Feature 4", "Not resolved by knowledge distillation from a larger model (Figure 5).")
    if not fig5:
        return c
    pts = fig5["points"]
    diffs = [s["spearman_rho"] - b["spearman_rho"] for b, s in zip(pts[0::2], pts[1::2])]
    mean = float(np.mean(diffs))
    c.pieces = [f"Over {len(diffs)} pair(s), the distilled model's ρ minus its counterpart's is ", _n(mean, src)]
    if len(diffs) > 1:
        from scipy.stats import ttest_1samp

        p = float(ttest_1samp(diffs, 0.0, alternative="less").pvalue)
        c.verdict = "supported" if p >= 0.05 else "not supported"
        c.pieces += [" (one-sided t-test that distillation lowers ρ: p = ", _n(p, src, "{:.3g}"), ")"]
    else:
        c.verdict = "supported" if mean > -0.1 else "not supported"
        c.pieces.append(" (one pair: supported unless distillation lowers ρ by more than 0.1)")
    c.pieces.append(f"; {c.verdict} at {scale} scale.")
    return c


def read_table(folder: Path):
    """A `lmdisp report` folder's table_values.csv (None when absent)."""
    import pandas as pd

    path = folder / "table_values.csv"
    return (pd.read_csv(path), path) if path.is_file() else (None, path)


def _seeds(row) -> list[float]:
    return [float(x) for x in str(row["seed_averages"]).split(",") if x not in ("", "nan")]


def _row(rows, method: str):
    """The row of `method`, or the one row of that loss with settings in its label (Qwen3's
    `dispersion (lambda=1.0)`)."""
    exact = rows[rows["method"] == method]
    if not exact.empty:
        return exact
    loss = rows["method"].str.split(" (", regex=False).str[0]
    loose = rows[(loss == method) | loss.str.startswith(method + "-")]  # Table 5: dispersion-torchtitan
    return loose if len(loose) == 1 else loose.iloc[0:0]


def compare(claim: Claim, table, src: Path, a: str, b: str, scale: str, label: str) -> Claim:
    """Is row `b`'s average above row `a`'s, per block: difference, Welch's t-test over seeds."""
    from lmdisp.eval.report import t_test

    verdicts = []
    for block, rows in table.groupby("base_model", sort=False):
        ra, rb = _row(rows, a), _row(rows, b)
        if ra.empty or rb.empty:
            continue
        xa, xb = _seeds(ra.iloc[0]), _seeds(rb.iloc[0])
        diff = float(np.mean(xb) - np.mean(xa))
        p = t_test(xb, xa, equal_var=False) if min(len(xa), len(xb)) > 1 else float("nan")
        v = ("supported" if diff > 0 and p < 0.05 else "same direction, not significant" if diff > 0
             else "not supported")
        verdicts.append(v)
        claim.pieces += [f"{block}: {label} ", _n(float(np.mean(xb)), src, "{:.2f}"), " vs ",
                         _n(float(np.mean(xa)), src, "{:.2f}"), " (difference ", _n(diff, src, "{:+.2f}"), " points, ",
                         *(["Welch p = ", _n(p, src, "{:.3g}")] if p == p else
                           ["no p-value: " + ("one seed" if min(len(xa), len(xb)) < 2 else "no spread over seeds")]),
                         f", {len(xb)}+{len(xa)} seeds); "]
    if verdicts:
        claim.verdict = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
        claim.pieces.append(f"{claim.verdict} at {scale} scale.")
    return claim


def table_claims(root: Path, scale: str, reports: dict[str, list[Path]]) -> list[Claim]:
    out = []
    t2 = [read_table(p) for p in reports.get("table2", [])]
    c = Claim("Dispersion vs ce (Table 2)", "Mid-training with dispersion improves the 10-task average over ce.")
    for table, src in t2:
        if table is not None:
            compare(c, table, src, "ce", "dispersion", scale, "dispersion")
    out.append(c)
    c = Claim("Late vs early half (Table 3)", "Dispersion on the late half of the layers beats the early half.")
    for table, src in [read_table(p) for p in reports.get("table3", [])]:
        if table is not None:
            compare(c, table, src, "dispersion (location=early_half)", "dispersion (location=late_half)", scale,
                    "late half")
    out.append(c)
    out.append(optimum(reports.get("table4", []), scale))
    c = Claim("Pre-training (Table 5)", "Dispersion in pre-training improves the average over ce (+1.17).")
    for table, src in [read_table(p) for p in reports.get("table5", [])]:
        if table is not None:
            compare(c, table, src, "ce", "dispersion", scale, "dispersion")
    out.append(c)
    return out


def optimum(folders: list[Path], scale: str) -> Claim:
    c = Claim("λ/τ optimum (Table 4)", "λ = 0.1, τ = 1.0 is the best setting.")
    for table, src in [read_table(p) for p in folders]:
        if table is None:
            continue
        disp = table[table["method"].str.startswith("dispersion")].sort_values("average", ascending=False, kind="stable")
        if disp.empty:
            continue
        best = disp.iloc[0]
        tied = int((disp["average"] >= best["average"] - 1e-9).sum())
        rank = list(disp["method"]).index("dispersion") + 1 if "dispersion" in set(disp["method"]) else None
        strict = best["method"] == "dispersion" and tied == 1
        c.verdict = "supported" if strict else "not supported"
        lead = (f"Of {len(disp)} settings the best average is {best['method']} (" if tied == 1 else
                f"Of {len(disp)} settings {tied} tie at the best average (")
        c.pieces = [lead, _n(float(best["average"]), src, "{:.2f}"), f"); λ 0.1, τ 1.0 ranks {rank} of {len(disp)}"
                    + (" (within the tie)" if tied > 1 and rank and rank <= tied else "")
                    + f"; {c.verdict} at {scale} scale."]
    return c


def figure7_claim(root: Path, scale: str) -> Claim:
    fig, src = _fig(root, "fig7")
    c = Claim("Figure 7", "Dispersion counteracts condensation; ce alone barely changes it.")
    if not fig:
        return c
    by = {}
    for pt in fig["points"]:
        by.setdefault(pt["group"], []).append(pt)
    if {"ce", "dispersion"} <= set(by):
        ce, disp = by["ce"][-1]["spearman_rho"], by["dispersion"][-1]["spearman_rho"]
        start = by["ce"][0]["spearman_rho"]
        c.verdict = "supported" if disp < ce else "not supported"
        c.pieces = ["From ρ ", _n(start, src), " before mid-training, the final ce model has ρ ", _n(ce, src),
                    " and the final dispersion model ", _n(disp, src), " (difference ", _n(disp - ce, src),
                    f"); {c.verdict} at {scale} scale."]
    return c


def all_claims(root: Path, scale: str, reports: dict[str, list[Path]]) -> list[Claim]:
    return [*feature_claims(root, scale), figure7_claim(root, scale), *table_claims(root, scale, reports)]
