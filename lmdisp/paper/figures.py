"""The paper's figures in the paper's layouts, from `lmdisp measure` run folders.

Layouts (the authors' key_observations/plot_trend.py and plot_heatmaps.py):
- families (Figure 2/S1): a row of heatmaps per family named in `heatmaps`, then one trend
  panel (Spearman, Kendall vs model, smallest to largest) per family;
- corpora (Figure S2): per corpus, a trend panel then every model's heatmap;
- widths (Figure 3): a heatmap per model with a dashed line at 0.5, then the trend panel;
- checkpoints (Figure 4): the trend over checkpoints;
- pairs (Figure 5): the trend panel, bases' heatmaps above, students' below;
- steps (Figure 7): a row per run (ce, dispersion), a heatmap per checkpoint.
Each figure is written as figure.png with figure.json: every number plotted and its source file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

LAYOUTS = ("families", "corpora", "widths", "checkpoints", "pairs", "steps")


def read_measure(folder: Path) -> list[dict]:
    """Per model of a measure run folder (in measured order): spec, rho, tau, histograms, sources."""
    import pandas as pd

    from lmdisp.measure.condensation import layer_histograms
    from lmdisp.runs import slugify

    table = pd.read_csv(folder / "models.csv")
    table = table[table["site"] == "hidden"] if "site" in table else table
    out, seen = [], {}
    for row in table.itertuples(index=False):
        n = seen[row.model] = seen.get(row.model, 0) + 1
        sub = folder / (slugify(row.model) + (f"-{n}" if n > 1 else ""))
        npz = sub / "matrices.npz"
        hist = layer_histograms(np.load(npz)["cossim_by_layer"]) if npz.is_file() else None
        out.append({"model": row.model, "rho": float(row.spearman_rho), "tau": float(row.kendall_tau),
                    "hist": hist, "params": int(row.params), "source": str(folder / "models.csv"),
                    "step": checkpoint_step(row.model)})
    return out


def checkpoint_step(spec: str) -> int | None:
    m = re.search(r"checkpoint-(\d+)$", spec.rstrip("/"))
    return int(m.group(1)) if m else None


def short_name(spec: str) -> str:
    spec = spec.rstrip("/")
    if "@" in spec:
        return spec.split("@")[1]
    parts = spec.split("/")
    if parts[-1].startswith("checkpoint-"):
        return f"step {parts[-1].split('-')[1]}"
    return parts[-1]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(fig, ax, hist, title: str, line: float | None = None) -> None:
    n = hist.shape[0]
    im = ax.imshow(hist.T, aspect="auto", origin="lower", cmap="Reds", vmin=0, vmax=10,
                   extent=[0, 1 if n > 1 else 0.01, -1, 1], interpolation="nearest")
    ax.set_ylim(-0.25, 1)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1])
    ax.set_xlabel("Layer Fraction")
    ax.set_title(title, fontfamily="monospace", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    if line is not None:
        ax.axhline(line, color="#1f3a93", ls="--", lw=1.5)
    cbar = fig.colorbar(im, ax=ax)
    cbar.ax.set_title("Density", fontsize=7)


def _stages(labels: list[str]) -> list[list[int]]:
    """Runs of consecutive indices with the same stage (`S1-...`, `S2-...`; Figure 4's gaps)."""
    keys = [re.match(r"(S\d+)-", lab).group(1) if re.match(r"S\d+-", lab) else lab for lab in labels]
    runs: list[list[int]] = []
    for i, k in enumerate(keys):
        if runs and keys[runs[-1][-1]] == k:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs if any(len(r) > 1 for r in runs) and len(runs) > 1 else [list(range(len(labels)))]


def trend(ax, models: list[dict], title: str = "", xlabel: str = "") -> None:
    for n, idx in enumerate(_stages([m["label"] for m in models])):
        first = n == 0
        ax.plot(idx, [models[i]["rho"] for i in idx], "-o", color="#2c5aa0", label="Spearman" if first else None)
        ax.plot(idx, [models[i]["tau"] for i in idx], "-o", color="#c0392b",
                label="Kendall's τ" if first else None)
    x = np.arange(len(models))
    ax.set_ylim(-1, 1.05)
    ax.set_xticks(x, [m["label"] for m in models], rotation=35, ha="right", fontsize=7)
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def _labelled(models: list[dict], labels: list[str] | None = None) -> list[dict]:
    for i, m in enumerate(models):
        m["label"] = labels[i] if labels and i < len(labels) else short_name(m["model"])
    return models


def draw(layout: str, groups: list[list[dict]], labels: list[str], heatmaps: list[str]):
    """The figure of `layout` from `groups` (one list of models per input folder)."""
    plt = _plt()
    if layout in ("families", "corpora"):
        rows = [i for i, name in enumerate(labels) if layout == "corpora" or name in heatmaps]
        width = max([len(groups[i]) for i in rows] + [len(groups)], default=1)
        fig, axes = plt.subplots(len(rows) + (layout == "families"), width + (layout == "corpora"),
                                 figsize=(3.2 * (width + 1), 2.8 * (len(rows) + 1)), squeeze=False)
        for r, gi in enumerate(rows):
            offset = 1 if layout == "corpora" else 0
            if layout == "corpora":
                trend(axes[r][0], _labelled(groups[gi]), labels[gi])
            for c, m in enumerate(groups[gi]):
                if m["hist"] is not None:
                    heatmap(fig, axes[r][c + offset], m["hist"], f"{labels[gi]} · {short_name(m['model'])}")
        if layout == "families":
            for c, group in enumerate(groups):
                trend(axes[-1][c], _labelled(group), labels[c])
    elif layout in ("widths", "steps", "pairs"):
        fig, axes = _grid(plt, layout, groups)
        _fill_grid(fig, axes, layout, groups, labels)
    else:  # checkpoints
        fig, ax = plt.subplots(figsize=(8, 4.5))
        trend(ax, _labelled(groups[0], labels), "Condensation through pre-training", "checkpoint")
    for ax in fig.axes:
        if not ax.has_data() and not ax.images:
            ax.set_visible(False)
    fig.tight_layout()
    return fig


def _grid(plt, layout: str, groups: list[list[dict]]):
    if layout == "widths":
        n = len(groups[0])
        return plt.subplots(1, n + 1, figsize=(3.4 * (n + 1), 3.2), squeeze=False)
    if layout == "steps":
        n = max(len(g) for g in groups)
        return plt.subplots(len(groups), n, figsize=(3.2 * n, 2.9 * len(groups)), squeeze=False)
    n = len(groups[0]) // 2
    return plt.subplots(2, n + 1, figsize=(3.4 * (n + 1), 6), squeeze=False)


def _fill_grid(fig, axes, layout: str, groups: list[list[dict]], labels: list[str]) -> None:
    if layout == "widths":
        models = _labelled(groups[0], labels)
        for c, m in enumerate(models):
            heatmap(fig, axes[0][c], m["hist"], m["label"], line=0.5)
        trend(axes[0][-1], models, "", "MLP dimension")
    elif layout == "steps":
        for r, group in enumerate(groups):
            for c, m in enumerate(group):
                step = 0 if c == 0 else m["step"]
                title = f"{labels[r] if r < len(labels) else ''} · step {step if step is not None else 'final'}"
                heatmap(fig, axes[r][c], m["hist"], title)
    else:  # pairs: groups[0] is base, student, base, student, ...
        models = groups[0]
        bases, students = models[0::2], models[1::2]
        for c, (b, s) in enumerate(zip(bases, students)):
            heatmap(fig, axes[0][c + 1], b["hist"], short_name(b["model"]))
            heatmap(fig, axes[1][c + 1], s["hist"], short_name(s["model"]))
        trend(axes[0][0], _labelled(list(bases)), labels[0] if labels else "base")
        trend(axes[1][0], _labelled(list(students)), labels[1] if len(labels) > 1 else "distilled")


def make_figure(layout: str, inputs: list[Path], output: Path, labels: list[str] | None = None,
                heatmaps: list[str] | None = None) -> Path:
    """Read the measure folders `inputs`, draw `layout`, write output/figure.png and figure.json."""
    from lmdisp.runs import save_figure, write_json

    groups = [read_measure(Path(p)) for p in inputs]
    labels = labels or [Path(p).name for p in inputs]
    fig = draw(layout, groups, labels, heatmaps or [])
    output.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output / "figure.png", dpi=110)
    several = len(groups) > 1 or layout in ("families", "corpora")
    points = [{"group": (labels[i] if i < len(labels) else str(i)) if several else "", "model": m["model"], "label": m.get("label"),
               "spearman_rho": m["rho"], "kendall_tau": m["tau"], "params": m["params"], "step": m["step"],
               "source": m["source"]} for i, g in enumerate(groups) for m in g]
    write_json(output / "figure.json", {"layout": layout, "labels": labels, "points": points,
                                        "inputs": [str(p) for p in inputs]})
    return output / "figure.png"


def load_points(folder: Path) -> dict:
    return json.loads((folder / "figure.json").read_text())
