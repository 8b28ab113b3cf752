"""From accumulated results to tables and summaries: per site, one row per layer (mean cosine,
its spread and bootstrap interval, the first-token statistics, the optional metrics), the
trend (rho, tau with intervals), the distance profile, and the two-model CKA table.

Layer numbering per site: `hidden` and `residual` 0..L (0 = embedding output), `attn` and `mlp`
1..L (layer l = block l-1, so l/L lines up with the residual point the block writes to), a
module pattern 0..n-1 in model order (fraction i/(n-1)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmdisp.measure.condensation import (CondensationResult, distance_profile, first_token_stats, last_n_means,
                                         trend)
from lmdisp.measure.uncertainty import bootstrap_ci


def layer_numbers(site: str, n: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(layer index, layer fraction) of a site's n layers."""
    if site in ("attn", "mlp"):
        idx = np.arange(1, n + 1)
        return idx, idx / max(n_blocks, 1)
    idx = np.arange(n)
    denom = n_blocks if site in ("hidden", "residual") else n - 1
    return idx, idx / max(denom, 1)


def module_labels(site: str, names: list[str], n: int) -> list[str]:
    if site == "hidden":
        return [f"hidden_states[{i}]" for i in range(n)]
    if site == "residual":
        return ["embeddings"] + names
    return names


def site_tables(site: str, result: CondensationResult, names: list[str], n_blocks: int, cfg) -> tuple[Any, dict]:
    """One site's per-layer DataFrame and summary dict."""
    import pandas as pd

    m = result.layer_means
    reps = result.num_repetitions
    idx, frac = layer_numbers(site, len(m), n_blocks)
    ci = bootstrap_ci(result.rep_means, cfg.bootstrap, cfg.confidence, cfg.seed)
    first = first_token_stats(result.mean_matrices)
    rows = {"site": site, "layer": idx, "module": module_labels(site, names, len(m)), "layer_fraction": frac,
            "mean_cos": m, "std_cos": result.rep_means.std(axis=0, ddof=1) if reps > 1 else np.nan,
            "ci_low": ci["low"], "ci_high": ci["high"], **first}
    summary: dict[str, Any] = {"site": site, "modules": module_labels(site, names, len(m)), **trend(m),
                               "spearman_rho_ci": list(ci["spearman_rho"]), "kendall_tau_ci": list(ci["kendall_tau"]),
                               "mean_cos_by_layer": m.tolist(), "mean_cos_ci_low": ci["low"].tolist(),
                               "mean_cos_ci_high": ci["high"].tolist(),
                               "mean_last_n_layers": {str(i + 1): v for i, v in enumerate(last_n_means(m))},
                               **{f"{k}_by_layer": v.tolist() for k, v in first.items()}}
    for name, values in result.extra.items():
        vci = bootstrap_ci(values, cfg.bootstrap, cfg.confidence, cfg.seed, trend=False)
        rows[f"{name}_mean"] = values.mean(axis=0)
        rows[f"{name}_std"] = values.std(axis=0, ddof=1) if len(values) > 1 else np.nan
        rows[f"{name}_ci_low"], rows[f"{name}_ci_high"] = vci["low"], vci["high"]
        summary[f"{name}_by_layer"] = rows[f"{name}_mean"].tolist()
        if name == "entropy":
            rows["effective_rank"] = np.exp(values).mean(axis=0)
    if result.dim_contributions is not None:
        summary["rogue_dims_by_layer"] = [np.argsort(cc)[::-1][:cfg.rogue_k].tolist() for cc in result.dim_contributions]
    layers = pd.DataFrame(rows)
    if result.logits_matrix is not None:
        logit_row = {"site": site, "layer": "logits", "module": "logits", "layer_fraction": np.nan,
                     "mean_cos": float(result.logits_matrix.astype(np.float64).mean()),
                     "std_cos": float(result.logits_rep_means.std(ddof=1)) if reps > 1 else np.nan}
        layers = pd.concat([layers, pd.DataFrame([logit_row])], ignore_index=True)
    return layers, summary


def positions_frame(results: dict[str, CondensationResult], n_blocks: int):
    """Long table: site, layer, distance |i-j|, mean cosine at that distance."""
    import pandas as pd

    frames = []
    for site, result in results.items():
        prof = distance_profile(result.mean_matrices)
        idx, _ = layer_numbers(site, len(prof), n_blocks)
        frames.append(pd.DataFrame({"site": site, "layer": np.repeat(idx, prof.shape[1]),
                                    "distance": np.tile(np.arange(prof.shape[1]), len(prof)),
                                    "mean_cos": prof.ravel()}))
    return pd.concat(frames, ignore_index=True)


def degenerate(site: str, summary: dict, reps: int, distinct: int) -> list[str]:
    """Why a site's statistics describe nothing (an empty list when they are sound): identical
    repetitions (a spread of 0, intervals of no width, p-values that test nothing), too few
    layers for a trend over depth, an undefined rho."""
    out = []
    if reps > 1 and distinct == 1:
        out.append(f"identical repetitions: all {reps} repetitions are the same text (a corpus of one record?), so "
                   "the spread over repetitions is 0 and the intervals and p-values describe nothing; use a larger "
                   "corpus or --texts with several texts")
    elif reps > 1 and distinct < reps:
        out.append(f"only {distinct} distinct texts among {reps} repetitions: the spread and intervals understate "
                   "the uncertainty")
    n = len(summary["mean_cos_by_layer"])
    if n < 3:
        out.append(f"site {site}: {n} layer(s) measured, too few for a trend over depth: rho and tau are undefined "
                   "(a --site pattern matching one module?)")
    elif not np.isfinite(summary["spearman_rho"]):
        out.append(f"site {site}: rho is undefined (the mean cosine is the same at every layer)")
    return out


def models_row(spec: str, num_params: int, n_blocks: int, site_summary: dict, wall: float) -> dict:
    m = site_summary["mean_cos_by_layer"]
    return {"model": spec, "site": site_summary["site"], "params": num_params, "layers": n_blocks,
            "spearman_rho": site_summary["spearman_rho"], "rho_ci_low": site_summary["spearman_rho_ci"][0],
            "rho_ci_high": site_summary["spearman_rho_ci"][1], "kendall_tau": site_summary["kendall_tau"],
            "tau_ci_low": site_summary["kendall_tau_ci"][0], "tau_ci_high": site_summary["kendall_tau_ci"][1],
            "mean_cos_first": m[0], "mean_cos_last": m[-1],
            "mean_cos_last_quarter": site_summary["mean_last_n_layers"][str(max(1, len(m) // 4))],
            "first_token_cos_last": site_summary["first_token_cos_by_layer"][-1],
            "wall_time_s": wall, "warnings": "; ".join(site_summary.get("warnings", []))}


def cka_frame(cka: dict[str, np.ndarray], pairs: dict[str, list], cfg):
    """site, layer_a, layer_b, mean CKA over repetitions and its bootstrap interval."""
    import pandas as pd

    frames = []
    for site, values in cka.items():
        ci = bootstrap_ci(values, cfg.bootstrap, cfg.confidence, cfg.seed, trend=False)
        a, b = zip(*pairs[site])
        offset = 1 if site in ("attn", "mlp") else 0
        frames.append(pd.DataFrame({"site": site, "layer_a": np.array(a) + offset, "layer_b": np.array(b) + offset,
                                    "cka": values.mean(axis=0), "ci_low": ci["low"], "ci_high": ci["high"]}))
    return pd.concat(frames, ignore_index=True)
