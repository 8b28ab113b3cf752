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
                       rho: Sequence[float], tau: Sequence[float]):
    """Figure 2b-style: m_l against layer fraction per model, and rho / tau per model in order."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(names), 1)))
    for name, m, c in zip(names, layer_means, colors):
        frac = np.arange(len(m)) / max(len(m) - 1, 1)
        left.plot(frac, m, marker="o", ms=3, color=c, label=name)
    left.set_xlabel("Layer fraction")
    left.set_ylabel("Mean cosine similarity")
    left.legend(fontsize=8, frameon=False)
    x = np.arange(len(names))
    right.bar(x - 0.2, rho, 0.4, label="Spearman ρ", color="#c0392b")
    right.bar(x + 0.2, tau, 0.4, label="Kendall τ", color="#e59866")
    right.axhline(0, color="k", lw=0.6)
    right.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    right.set_ylim(-1, 1)
    right.set_ylabel("Correlation with depth")
    right.legend(fontsize=8, frameon=False)
    for ax in (left, right):
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
