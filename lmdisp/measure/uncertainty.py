"""Bootstrap confidence intervals over repetitions (percentile bootstrap, Efron & Tibshirani 1993).

The R repetitions are independent draws of a text, so they are the unit of resampling. Each of
B bootstrap samples draws R repetitions with replacement (numpy `default_rng(seed)`), which is
the same as giving repetition r a multinomial count c_r (sum_r c_r = R). Because m_l, the mean
of the mean matrix M_l, equals the average of the per-repetition means
(`CondensationResult.rep_means`, shape (R, L+1)), a bootstrap sample's layer means are exactly

    m*_l = (1/R) sum_r c_r m_{r,l},

one (B x R) @ (R x (L+1)) product for all samples at once, with no pass over the model. The
same counts give, per sample, Spearman rho and Kendall tau of (m*_0..m*_L) against the layer
index, so the intervals of the layer means and of the trend come from the same resamples.
The interval at level 1 - alpha is the (alpha/2, 1 - alpha/2) percentile of the B values.
With R = 1 there is nothing to resample and the intervals are NaN.
"""

from __future__ import annotations

import numpy as np


def bootstrap_counts(repetitions: int, samples: int, seed: int) -> np.ndarray:
    """(samples, R) multinomial counts: how often each repetition is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(repetitions, np.full(repetitions, 1.0 / repetitions), size=samples)


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(samples, L): the per-layer mean of `values` (R, L) under each resample."""
    return counts @ np.asarray(values, dtype=np.float64) / counts.sum(axis=1, keepdims=True)


def spearman_rows(y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row of y (samples, n) against 0..n-1 (average ranks for ties)."""
    from scipy.stats import rankdata

    ranks = rankdata(y, axis=1)
    x = np.arange(y.shape[1], dtype=np.float64)
    x -= x.mean()
    r = ranks - ranks.mean(axis=1, keepdims=True)
    denom = np.sqrt((r ** 2).sum(axis=1) * (x ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r @ x) / denom


def kendall_rows(y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row of y (samples, n) against 0..n-1 (the index has no ties):
    sum_{i<j} sign(y_j - y_i) / sqrt(n0 (n0 - n_ties)), n0 = n(n-1)/2."""
    n = y.shape[1]
    i, j = np.triu_indices(n, k=1)
    signs = np.sign(y[:, j] - y[:, i])
    untied = (signs != 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return signs.sum(axis=1) / np.sqrt(len(i) * untied)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The (alpha/2, 1 - alpha/2) percentiles along axis 0, alpha = 1 - level."""
    alpha = 1.0 - level
    lo, hi = np.nanpercentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return lo, hi


def bootstrap_ci(rep_values: np.ndarray, samples: int = 1000, level: float = 0.95, seed: int = 0,
                 trend: bool = True) -> dict[str, np.ndarray | tuple[float, float]]:
    """Intervals for every layer's mean of `rep_values` (R, L) and, with `trend`, for rho and tau.

    Returns {"low": (L,), "high": (L,)} and, with `trend`, "spearman_rho" and "kendall_tau" as
    (low, high). NaN everywhere when R < 2 or `samples` is 0."""
    rep_values = np.asarray(rep_values, dtype=np.float64)
    reps, n = rep_values.shape
    nan = np.full(n, np.nan)
    out: dict = {"low": nan, "high": nan}
    if trend:
        out.update(spearman_rho=(np.nan, np.nan), kendall_tau=(np.nan, np.nan))
    if reps < 2 or samples < 1:
        return out
    means = resampled_means(rep_values, bootstrap_counts(reps, samples, seed))
    out["low"], out["high"] = percentile_interval(means, level)
    if trend and n > 1:
        for key, fn in (("spearman_rho", spearman_rows), ("kendall_tau", kendall_rows)):
            lo, hi = percentile_interval(fn(means), level)
            out[key] = (float(lo), float(hi))
    return out
