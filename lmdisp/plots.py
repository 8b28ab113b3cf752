"""Figures in the paper's style (matplotlib, headless)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def condensation_heatmap(histograms: np.ndarray, title: str = ""):
    """Figure 2a: per layer, the density of mean-matrix entries; x = layer fraction l/L."""
    plt = _plt()
    n = histograms.shape[0]
    fig, ax = plt.subplots(figsize=(6, 4.8))
    im = ax.imshow(histograms.T, aspect="auto", origin="lower", cmap="Reds", vmin=0, vmax=10,
                   extent=[0, 1 if n > 1 else 0.01, -1, 1], interpolation="nearest")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("Layer fraction")
    ax.set_ylabel("Cosine similarity")
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1])
    if title:
        ax.set_title(title)
    cbar = fig.colorbar(im, ax=ax)
    cbar.ax.set_title("Density", fontsize=9)
    return fig


def condensation_trend(names: Sequence[str], layer_means: Sequence[np.ndarray],
                       rho: Sequence[float], tau: Sequence[float], bands: Sequence | None = None,
                       rho_ci: Sequence | None = None, tau_ci: Sequence | None = None,
                       fractions: Sequence | None = None, groups: Sequence[tuple[str, str]] | None = None):
    """Figure 2b-style: m_l against layer fraction per series (with its bootstrap band), and rho /
    tau per series in order (with their intervals as error bars). `groups`: (model, site) per
    series: one colour per model, one line style per site."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    models = list(dict.fromkeys(g[0] for g in groups)) if groups else list(names)
    sites = list(dict.fromkeys(g[1] for g in groups)) if groups else [None]
    palette = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(models), 1)))
    styles = ["-", "--", ":", "-."]
    for i, (name, m) in enumerate(zip(names, layer_means)):
        model, site = groups[i] if groups else (name, None)
        c, ls = palette[models.index(model)], styles[sites.index(site) % len(styles)]
        frac = np.asarray(fractions[i], dtype=float) if fractions is not None else np.arange(len(m)) / max(len(m) - 1, 1)
        left.plot(frac, m, marker="o", ms=3, color=c, ls=ls, label=name)
        if bands is not None and np.all(np.isfinite(bands[i][0])):
            left.fill_between(frac, bands[i][0], bands[i][1], color=c, alpha=0.25, lw=0)
    left.set_xlabel("Layer fraction")
    left.set_ylabel("Mean cosine similarity")
    left.legend(fontsize=7 if len(names) > 6 else 8, frameon=False, ncol=2 if len(names) > 6 else 1)
    x = np.arange(len(names))
    for offset, values, ci, label, color in ((-0.2, rho, rho_ci, "Spearman ρ", "#c0392b"),
                                             (0.2, tau, tau_ci, "Kendall τ", "#e59866")):
        err = None
        if ci is not None and np.all(np.isfinite(np.asarray(ci, dtype=float))):
            lo, hi = np.asarray(ci, dtype=float).T
            err = np.clip([np.asarray(values) - lo, hi - np.asarray(values)], 0, None)
        right.bar(x + offset, values, 0.4, yerr=err, capsize=2, label=label, color=color)
    right.axhline(0, color="k", lw=0.6)
    right.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(-1, 1)
    right.set_ylabel("Correlation with depth")
    right.legend(fontsize=8, frameon=False)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def position_plot(profile, site_summary: dict, title: str = ""):
    """Left: mean cosine vs token distance |i-j| per layer (colour = depth); right: per layer, the
    first token's mean similarity to the others next to the mean cosine without it."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    layers = sorted(profile["layer"].unique())
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(layers), 1)))
    for layer, c in zip(layers, colors):
        part = profile[(profile["layer"] == layer) & (profile["distance"] > 0)]
        left.plot(part["distance"], part["mean_cos"], color=c, lw=0.9)
    left.set_xscale("log")
    left.set_xlabel("Token distance |i − j|")
    left.set_ylabel("Mean cosine similarity")
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(min(layers), max(layers)))
    fig.colorbar(sm, ax=left).ax.set_title("layer", fontsize=9)
    x = np.asarray(layers[:len(site_summary["first_token_cos_by_layer"])])
    right.plot(x, site_summary["first_token_cos_by_layer"], marker="o", ms=3, color="#c0392b",
               label="first token vs the others")
    right.plot(x, site_summary["mean_cos_without_first_by_layer"], marker="o", ms=3, color="#2c3e50",
               label="mean cosine without the first token")
    right.plot(x, site_summary["mean_cos_by_layer"], ls="--", color="grey", label="mean cosine (all)")
    right.set_xlabel("Layer")
    right.set_ylabel("Cosine similarity")
    right.legend(fontsize=8, frameon=False)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def cka_plot(frame, name_a: str, name_b: str):
    """Linear CKA between corresponding layers of two models, one line (and band) per site."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for site, part in frame.groupby("site", sort=False):
        ax.plot(part["layer_a"], part["cka"], marker="o", ms=3, label=site)
        if np.all(np.isfinite(part["ci_low"])):
            ax.fill_between(part["layer_a"], part["ci_low"], part["ci_high"], alpha=0.25, lw=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"Layer of {name_a}")
    ax.set_ylabel("Linear CKA")
    ax.set_title(f"{name_a} vs {name_b}", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def condensation_trace(df, title: str = ""):
    """Layer x training step heatmap of the mean cosine similarity (`condensation.csv`)."""
    plt = _plt()
    grid = df.pivot_table(index="layer", columns="step", values="mean_cos")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = grid.columns.to_numpy()
    im = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="Reds", vmin=0, vmax=1,
                   extent=[-0.5, len(steps) - 0.5, -0.5, len(grid) - 0.5], interpolation="nearest")
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int)
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_xlabel("Training step")
    ax.set_ylabel("Layer")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax).ax.set_title("mean cos", fontsize=9)
    return fig
