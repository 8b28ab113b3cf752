"""Where condensation happens in SmolLM2-135M, offline: mean cosine per site (hidden states,
residual stream, attention and MLP outputs) with bootstrap bands, the first-token effect, and
the isotropy views; plus what the extras cost (`make geometry`).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/geometry.py                  # README figures
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/geometry.py --repetitions 4 --output /tmp/geo

1. Two `lmdisp.measure.run_measure` calls (all sites in one pass, `--metrics
   centred,isoscore,rogue`), as measured and with `--skip-first 1`, their run folders under
   results/geometry/ (layers.csv, positions.csv, heatmaps, summary.json with every interval).
   Defaults (8 repetitions x 256 tokens) keep it to minutes on a shared 2-core CPU. Then
   `--compare` of SmolLM2 with the same architecture at initialisation (linear CKA, residual).
2. Cost: on the same loaded model and texts, `measure_sites` timed (time.perf_counter, in
   `--rounds` interleaved rounds) for the default (hidden, no metric), all four sites, all sites + the O(S d)
   metrics (centred, rogue), and all sites + every metric (the SVD ones: isoscore, entropy,
   variance), each as a ratio to the default in the same round: median [min, max] over rounds,
   with the load average.
3. Writes results/bench/geometry.png (the figure), geometry.json and geometry.md (the tables),
   and fills the README block `geometry` with `--readme` (`make geometry README=1`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_OUTPUT = str(REPO / "results" / "bench" / "geometry")
MODEL = "smollm2-135m"
SITES = ["hidden", "residual", "attn", "mlp"]
COSTS = {"default (hidden)": ([], ["hidden"]), "4 sites": ([], SITES),
         "4 sites + centred, rogue": (["centred", "rogue"], SITES),
         "4 sites + all metrics": (["entropy", "variance", "centred", "isoscore", "rogue"], SITES)}


def measure(args, skip_first: int = 0):
    from lmdisp.measure import MeasureConfig, run_measure

    cfg = MeasureConfig(models=[MODEL], dataset="builtin", repetitions=args.repetitions, max_length=args.max_length,
                        site=SITES, metrics=["centred", "isoscore", "rogue"], dtype="float32", device="cpu",
                        skip_first=skip_first, results_dir=str(REPO / "results" / "geometry"))
    return run_measure(cfg)


def cka_at_init(args):
    """Linear CKA, residual stream, trained SmolLM2 vs the same architecture at initialisation."""
    from lmdisp.measure import MeasureConfig, run_measure

    cfg = MeasureConfig(models=[MODEL, f"random:{MODEL}"], dataset="builtin", repetitions=args.repetitions,
                        max_length=args.max_length, site=["residual"], compare=True, dtype="float32", device="cpu",
                        plots=False, results_dir=str(REPO / "results" / "geometry"))
    return run_measure(cfg).compare


def costs(args) -> dict[str, list[float]]:
    """Seconds per repetition of each configuration in each round (configurations interleaved
    within a round), same model and texts."""
    from lmdisp.data import load_corpus, sample_texts
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.measure.run import measure_sites
    from lmdisp.models import load_model

    loaded = load_model(MODEL, dtype="float32", device="cpu")
    texts = sample_texts(load_corpus("builtin"), args.cost_repetitions, seed=0)
    measure_sites(loaded, texts[:1], MeasureConfig(repetitions=1, max_length=args.cost_max_length))  # warm-up
    per_round: dict[str, list[float]] = {name: [] for name in COSTS}
    for _ in range(args.rounds):
        for name, (metrics, sites) in COSTS.items():
            cfg = MeasureConfig(repetitions=len(texts), max_length=args.cost_max_length, site=sites, metrics=metrics,
                                batch_size=1)
            start = time.perf_counter()
            measure_sites(loaded, texts, cfg)
            per_round[name].append((time.perf_counter() - start) / len(texts))
    return per_round


def figure(item, skipped):
    import numpy as np

    from lmdisp.plots import _plt

    plt = _plt()
    sites = item.summary["sites"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    colors = {"hidden": "#7f8c8d", "residual": "#2c3e50", "attn": "#2980b9", "mlp": "#c0392b"}
    layers = item.layers
    for site, s in sites.items():
        part = layers[(layers["site"] == site) & (layers["layer"] != "logits")]
        x = part["layer_fraction"].to_numpy(float)
        axes[0].plot(x, part["mean_cos"], marker="o", ms=3, color=colors[site],
                     label=f"{site} (ρ={s['spearman_rho']:+.2f} [{s['spearman_rho_ci'][0]:+.2f}, {s['spearman_rho_ci'][1]:+.2f}])")
        axes[0].fill_between(x, part["ci_low"], part["ci_high"], color=colors[site], alpha=0.25, lw=0)
        if site != "hidden":
            axes[1].plot(x, part["first_token_cos"], color=colors[site], label=f"{site}: first token vs rest")
            axes[1].plot(x, part["mean_cos_without_first"], color=colors[site], ls="--",
                         label=f"{site}: mean cos without it")
    res = layers[layers["site"] == "residual"]
    x = res["layer_fraction"].to_numpy(float)
    for col, label, color in (("mean_cos", "mean cosine", "#2c3e50"), ("centred_mean", "centred cosine", "#16a085"),
                              ("isoscore_mean", "IsoScore", "#8e44ad"), ("rogue_mean", "top-3 dims' share of cos", "#d35400")):
        axes[2].plot(x, res[col], marker="o", ms=3, color=color, label=label)
        if col != "rogue_mean":
            res1 = skipped.layers[skipped.layers["site"] == "residual"]
            axes[2].plot(res1["layer_fraction"].to_numpy(float), res1[col], ls=":", color=color,
                         label=f"{label}, first token dropped")
    titles = ("Mean cosine per site (95% bootstrap band)", "First-token effect", "Residual stream: other views")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("Layer fraction")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("Cosine similarity")
    axes[2].set_ylim(-0.02, 1.02)
    fig.suptitle(f"{MODEL}, builtin corpus, {item.summary['repetitions']} repetitions x {item.summary['seq_len']} tokens",
                 fontsize=10)
    fig.tight_layout()
    return fig


def post_pass_seconds(item) -> float:
    """Time of the after-the-pass work for every site: per-layer tables with bootstrap intervals
    and the distance profiles (what `summarize` and `positions_frame` do)."""
    from lmdisp.measure.config import MeasureConfig
    from lmdisp.measure.tables import positions_frame, site_tables

    cfg = MeasureConfig(metrics=["centred", "isoscore", "rogue"])
    start = time.perf_counter()
    for site, result in item.results.items():
        labels = item.summary["sites"][site]["modules"]  # residual's start with "embeddings"
        site_tables(site, result, labels[1:] if site == "residual" else labels, item.num_layers, cfg)
    positions_frame(item.results, item.num_layers)
    return time.perf_counter() - start


def markdown(item, skipped, cost: dict[str, list[float]], post: float, args, run_path: Path, cka=None) -> str:
    from bench.common import device_name

    rows = ["| site | ρ [95% CI] | τ [95% CI] | cos first layer | cos last layer | first token vs rest, last layer "
            "| mean cos without first token, last layer | ρ, --skip-first 1 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for site, s in item.summary["sites"].items():
        s1 = skipped.summary["sites"][site]
        rows.append(f"| {site} | {s['spearman_rho']:+.3f} [{s['spearman_rho_ci'][0]:+.2f}, {s['spearman_rho_ci'][1]:+.2f}] "
                    f"| {s['kendall_tau']:+.3f} [{s['kendall_tau_ci'][0]:+.2f}, {s['kendall_tau_ci'][1]:+.2f}] "
                    f"| {s['mean_cos_by_layer'][0]:.3f} | {s['mean_cos_by_layer'][-1]:.3f} "
                    f"| {s['first_token_cos_by_layer'][-1]:.3f} | {s['mean_cos_without_first_by_layer'][-1]:.3f} "
                    f"| {s1['spearman_rho']:+.3f} [{s1['spearman_rho_ci'][0]:+.2f}, {s1['spearman_rho_ci'][1]:+.2f}] |")
    res, res1 = (x.layers[x.layers["site"] == "residual"].set_index("layer") for x in (item, skipped))
    peak = int(res["centred_mean"].astype(float).idxmax())
    views = (f"\nResidual stream, layer {peak} (where the centred cosine peaks): mean cosine "
             f"{res.loc[peak, 'mean_cos']:.3f}, centred cosine {res.loc[peak, 'centred_mean']:.3f}, IsoScore "
             f"{res.loc[peak, 'isoscore_mean']:.3f}, top-3 dimensions' share of the "
             f"cosine {res.loc[peak, 'rogue_mean']:.3f}; with the first token dropped: centred cosine "
             f"{res1.loc[peak, 'centred_mean']:.3f}, IsoScore {res1.loc[peak, 'isoscore_mean']:.3f}.\n")
    if cka is not None:
        picks = [0, len(cka) // 4, len(cka) // 2, 3 * len(cka) // 4, len(cka) - 1]
        views += (f"\nLinear CKA, residual stream, {MODEL} vs the same architecture at initialisation "
                  f"(`--compare`, same texts): " + ", ".join(f"layer {int(cka['layer_a'][i])} {cka['cka'][i]:.2f} "
                  f"[{cka['ci_low'][i]:.2f}, {cka['ci_high'][i]:.2f}]" for i in picks) + ".\n")
    import statistics

    from bench.common import load_note, show, spread

    base = cost["default (hidden)"]
    crow = ["| configuration | s/rep (median) | vs default, median [min, max] over rounds |", "|---|---:|---:|"]
    crow += [f"| {name} | {statistics.median(v):.3f} | {show(spread([a / b for a, b in zip(v, base)]))} |"
             for name, v in cost.items()]
    crow += ["", load_note(*args.load)]
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return (f"{MODEL} float32 CPU, builtin corpus, {args.repetitions} repetitions x {args.max_length} tokens "
            f"(`make geometry`; {device_name()}, {stamp}; run folder `{run_path.relative_to(REPO) if run_path.is_relative_to(REPO) else run_path}`).\n\n"
            + "\n".join(rows) + "\n" + views + f"\nCost of the extras ({args.cost_repetitions} repetitions x {args.cost_max_length} "
            f"tokens, batch size 1, {args.rounds} interleaved rounds; the forward passes and streaming accumulation). After the pass, the tables, bootstrap "
            f"intervals (1000 resamples) and distance profiles of all four sites took {post:.2f} s in all "
            f"({args.repetitions} repetitions x {args.max_length} tokens), a one-off cost independent of the pass.\n\n"
            + "\n".join(crow) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--cost-max-length", type=int, default=256)
    parser.add_argument("--cost-repetitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    from bench.common import load_average, publish, readme_flag

    readme_flag(parser)
    args = parser.parse_args()
    before = load_average()
    from lmdisp.runs import save_figure

    run = measure(args)
    (item,) = run.models
    (skipped,) = measure(args, skip_first=1).models
    cka = cka_at_init(args)
    cost = costs(args)
    args.load = (before, load_average())
    save_figure(figure(item, skipped), Path(args.output).with_suffix(".png"), dpi=80)
    report = {"model": MODEL, "repetitions": args.repetitions, "max_length": args.max_length,
              "cost_max_length": args.cost_max_length, "run": str(run.path),
              "sites": item.summary["sites"], "sites_skip_first_1": skipped.summary["sites"], "cost_s_per_rep_by_round": cost,
              "load_average_before": args.load[0], "load_average_after": args.load[1],
              "cka_vs_init_residual": cka.to_dict(orient="list")}
    post = post_pass_seconds(item)
    report["post_pass_s"] = post
    publish("geometry", report, markdown(item, skipped, cost, post, args, run.path, cka), args.output,
            readme=args.readme)


if __name__ == "__main__":
    main()
