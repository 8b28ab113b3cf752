"""`lmdisp measure`: embedding condensation of one or more models, paper protocol by default.

    from lmdisp.measure import MeasureConfig, run_measure
    run = run_measure(MeasureConfig(models=["smollm2-135m"], dataset="builtin", repetitions=10))
    print(run.path, run.table)

Texts are sampled once and shared by all models of a call; each model is loaded, measured
batch by batch into one `CondensationAccumulator` per site (`--site`, see `sites`) on its own
device, all sites from the same forward pass, written to its own sub-folder, and freed before
the next one is loaded. With `--compare` the two models are loaded together and run in
lockstep on the same token ids, so linear CKA (`compare`) is computed batch by batch. Tables,
bootstrap intervals and position profiles are computed after the pass (`tables`).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lmdisp.config import as_dict
from lmdisp.data import cycle_texts, load_corpus, read_texts, sample_texts
from lmdisp.errors import DataError, LmdispError
from lmdisp.measure.compare import CkaAccumulator
from lmdisp.measure.condensation import CondensationAccumulator, CondensationResult, layer_histograms
from lmdisp.measure.config import MeasureConfig
from lmdisp.measure.sites import SiteRecorder, find_blocks
from lmdisp.measure.tables import cka_frame, degenerate, models_row, positions_frame, site_tables
from lmdisp.models import (LoadedModel, check_model, check_vocabulary, default_tokenizer, load_model,
                           load_tokenizer, resolve_device)
from lmdisp.runs import RunDir, peak_memory, provenance, save_figure, save_npz, slugify, write_json, write_table

MeasureProgress = Callable[[str, int, int], None]  # (model spec, repetitions done, total)


@dataclass
class ModelMeasurement:
    spec: str
    source: str
    num_params: int
    num_layers: int
    results: dict[str, CondensationResult]  # site -> result, in --site order
    summary: dict[str, Any]
    layers: Any  # pandas DataFrame, one row per site and layer
    folder: Path | None = None

    @property
    def result(self) -> CondensationResult:
        """The first site's result (`hidden` by default)."""
        return next(iter(self.results.values()))


@dataclass
class MeasureRun:
    path: Path
    models: list[ModelMeasurement]
    table: Any  # pandas DataFrame, one row per model and site
    compare: Any = None  # pandas DataFrame of CKA per site and layer pair (--compare)


@dataclass
class SiteResults:
    results: dict[str, CondensationResult]
    names: dict[str, list[str]]  # site -> module names
    distinct: int = 0            # distinct token sequences among the repetitions


def prepare_texts(cfg: MeasureConfig) -> tuple[list[str], str]:
    """The R texts every model sees, and a label for the corpus."""
    if cfg.texts:
        return cycle_texts(read_texts(cfg.texts), cfg.repetitions), f"texts:{cfg.texts}"
    corpus = load_corpus(cfg.dataset, text_field=cfg.text_field, split=cfg.split, subset=cfg.subset)
    return sample_texts(corpus, cfg.repetitions, seed=cfg.seed, min_words=cfg.min_words,
                        max_words=cfg.max_words), corpus.name


def tokenize(tokenizer, texts: list[str], max_length: int, source: str | None = None) -> dict[str, Any]:
    """Tokenise and truncate to exactly `max_length` tokens; every text must reach it.
    `source`: the `--texts` file the texts came from (None: sampled from --dataset)."""
    import torch

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    short = [(r, n) for r, n in enumerate(lengths) if n < max_length]
    if short:
        r, n = short[0]
        what = f"text of repetition {r}" + (f" (--texts {source})" if source else "")
        fix = (f"lower --max-length to {min(lengths)} or give longer texts (--min-words applies to --dataset, "
               "not --texts)") if source else "raise --min-words or lower --max-length"
        raise DataError(f"{what} has only {n} tokens, fewer than --max-length {max_length} "
                        f"({len(short)} of {len(texts)} texts are short); {fix}")
    return {k: torch.tensor(v) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def measure_batch_size(batch_size: int | None, device_type: str) -> int:
    """The default trades nothing on a CPU (no speed-up from batching) for throughput on a GPU."""
    return batch_size or (8 if device_type == "cuda" else 1)


class _Stream:
    """One model's forward passes over the tokenised texts and its accumulators, one per site."""

    def __init__(self, loaded: LoadedModel, cfg: MeasureConfig, enc: dict):
        self.loaded, self.cfg, self.enc = loaded, cfg, enc
        self.model = loaded.model
        self.device = self.model.get_input_embeddings().weight.device
        self.recorder = SiteRecorder(self.model, cfg.site, cfg.skip_first)  # no hook for `hidden`
        self.accs = {site: CondensationAccumulator(cfg.metrics, cfg.rogue_k) for site in cfg.site}

    def step(self, start: int, size: int) -> dict[str, list]:
        """Run one batch, accumulate every site, return the site tensors (valid until the next step)."""
        batch = {k: v[start:start + size].to(self.device) for k, v in self.enc.items()}
        rows, seq = batch["input_ids"].shape
        out = self.model(**batch, output_hidden_states=self.recorder.needs_hidden_states)
        acts = self.recorder.collect(out, rows, seq)
        logits = getattr(out, "logits", None) if self.cfg.include_logits else None
        if logits is not None and self.cfg.skip_first:
            logits = logits[:, self.cfg.skip_first:]
        for i, (site, tensors) in enumerate(acts.items()):
            self.accs[site].update(tensors, logits if i == 0 else None)
        return acts

    def finish(self) -> SiteResults:
        self.recorder.close()
        import torch

        distinct = int(torch.unique(self.enc["input_ids"], dim=0).shape[0])
        return SiteResults({site: acc.result() for site, acc in self.accs.items()}, dict(self.recorder.names), distinct)


def measure_sites(loaded: LoadedModel, texts: list[str], cfg: MeasureConfig, progress: MeasureProgress | None = None,
                  partner: LoadedModel | None = None):
    """Stream all repetitions through the model, accumulating every site of `cfg.site` in one pass.
    With `partner` (--compare) both models run in lockstep on the same token ids and the result is
    (SiteResults A, SiteResults B, {site: (R, pairs) CKA}, {site: layer pairs})."""
    import torch

    for item in (loaded, partner):
        if item is not None and item.max_positions and cfg.max_length > item.max_positions:
            raise DataError(f"--max-length {cfg.max_length} exceeds the {item.max_positions} positions of "
                            f"`{item.spec}`")
    enc = tokenize(loaded.tokenizer, texts, cfg.max_length, cfg.texts)
    streams = [_Stream(loaded, cfg, enc)]
    ckas: dict[str, CkaAccumulator] = {}
    if partner is not None:
        enc_b = tokenize(partner.tokenizer, texts, cfg.max_length, cfg.texts)
        if not torch.equal(enc["input_ids"], enc_b["input_ids"]):
            raise DataError(f"--compare: `{loaded.spec}` and `{partner.spec}` tokenise the texts differently; "
                            "CKA needs the same tokens (models sharing a tokenizer)")
        streams.append(_Stream(partner, cfg, enc_b))
        ckas = {site: CkaAccumulator() for site in cfg.site}
    batch_size = measure_batch_size(cfg.batch_size, streams[0].device.type)
    total = len(texts)
    try:
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                acts = [s.step(start, batch_size) for s in streams]
                for site, acc in ckas.items():
                    acc.update(acts[0][site], acts[1][site])
                del acts
                if progress:
                    for s in streams:
                        progress(s.loaded.spec, min(start + batch_size, total), total)
    finally:
        for s in streams:
            s.recorder.close()
    results = [s.finish() for s in streams]
    if partner is None:
        return results[0]
    return (*results, {k: v.result() for k, v in ckas.items()}, {k: v.pairs for k, v in ckas.items()})


def measure_model(loaded: LoadedModel, texts: list[str], cfg: MeasureConfig,
                  progress: MeasureProgress | None = None) -> CondensationResult:
    """The first site's result (`hidden` by default: the paper's measurement)."""
    return next(iter(measure_sites(loaded, texts, cfg, progress).results.values()))


def num_blocks(model, fallback: int) -> int:
    try:
        return len(find_blocks(model)[1])
    except LmdispError:
        return fallback


def summarize(loaded: LoadedModel, measured: SiteResults, cfg: MeasureConfig, corpus: str,
              wall: float, device: str, dtype: str):
    """Per-layer table (all sites) and summary dict for one model; the top-level trend fields are
    the first site's, every site's are under `sites`."""
    import pandas as pd

    first = next(iter(measured.results.values()))
    n_blocks = num_blocks(loaded.model, len(first.layer_means) - 1)
    frames, sites = [], {}
    for site, result in measured.results.items():
        frame, sites[site] = site_tables(site, result, measured.names[site], n_blocks, cfg)
        sites[site]["warnings"] = degenerate(site, sites[site], result.num_repetitions, measured.distinct)
        frames.append(frame)
    warnings = list(dict.fromkeys(w for s in sites.values() for w in s["warnings"]))
    head = sites[cfg.site[0]]
    summary = {
        "model": loaded.spec, "model_source": loaded.source, "model_location": loaded.location,
        "num_params": loaded.num_params, "num_layers": n_blocks,
        **{k: v for k, v in head.items() if k not in ("modules",)},
        "corpus": corpus, "repetitions": first.num_repetitions, "seq_len": int(first.mean_matrices.shape[1]),
        "skip_first": cfg.skip_first, "min_words": cfg.min_words, "max_words": cfg.max_words, "seed": cfg.seed,
        "batch_size": measure_batch_size(cfg.batch_size, device.split(":")[0]), "dtype": dtype, "device": device,
        "metrics": list(cfg.metrics), "bootstrap": cfg.bootstrap, "confidence": cfg.confidence,
        "wall_time_s": round(wall, 3), "sites": sites, "degenerate": bool(warnings), "warnings": warnings,
    }
    return pd.concat(frames, ignore_index=True), summary


def run_measure(cfg: MeasureConfig, progress: MeasureProgress | None = None,
                on_model_start: Callable[[str], None] | None = None) -> MeasureRun:
    """Measure every model in `cfg.models`, write the run folder, return the results."""
    import pandas as pd

    RunDir.check("measure", root=cfg.results_dir, output=cfg.output)  # before any work: no result lost
    resolve_device(cfg.device)  # refuses cuda on a machine without one, before any text loads
    for spec in cfg.models:  # fail fast on a bad model or bad data, before any weights load
        check_model(spec, trust_remote_code=cfg.trust_remote_code)
    texts, corpus = prepare_texts(cfg)
    for spec in cfg.models:  # every token id must have an embedding row (tokenizers only, no weights)
        tokenizer = load_tokenizer(cfg.tokenizer or default_tokenizer(spec), trust_remote_code=cfg.trust_remote_code)
        check_vocabulary(spec, tokenizer, trust_remote_code=cfg.trust_remote_code)
    name = slugify(cfg.models[0]) + (f"+{len(cfg.models) - 1}" if len(cfg.models) > 1 else "")
    run = RunDir.create("measure", name, root=cfg.results_dir, output=cfg.output)
    try:
        done, compare, mem = _measure_all(cfg, texts, corpus, run, progress, on_model_start)
    except BaseException:
        run.discard_if_empty()  # nothing written yet: leave no empty run folder behind
        raise
    table = pd.DataFrame([models_row(d.spec, d.num_params, d.num_layers, d.summary["sites"][site],
                                     d.summary["wall_time_s"]) for d in done for site in d.results])
    write_table(table, run.path / "models")
    if compare is not None:
        write_table(compare, run.path / "compare")
    if cfg.plots:
        from lmdisp.plots import cka_plot, condensation_trend

        series = [(d.spec if len(cfg.site) == 1 else f"{d.spec} · {site}", d.summary["sites"][site], (d.spec, site),
                   d.layers.loc[(d.layers["site"] == site) & (d.layers["layer"] != "logits"), "layer_fraction"])
                  for d in done for site in d.results]
        names, sums, groups, fracs = zip(*series)
        save_figure(condensation_trend(names, [np.asarray(s["mean_cos_by_layer"]) for s in sums],
                                       [s["spearman_rho"] for s in sums], [s["kendall_tau"] for s in sums],
                                       bands=[(s["mean_cos_ci_low"], s["mean_cos_ci_high"]) for s in sums],
                                       rho_ci=[s["spearman_rho_ci"] for s in sums],
                                       tau_ci=[s["kendall_tau_ci"] for s in sums], fractions=fracs,
                                       groups=groups), run.path / "trend.png")
        if compare is not None:
            save_figure(cka_plot(compare, *cfg.models), run.path / "cka.png")
    run.write_manifest(as_dict(cfg), corpus=corpus, memory=mem)
    run.release()
    return MeasureRun(run.path, done, table, compare)


def _measure_all(cfg: MeasureConfig, texts: list[str], corpus: str, run: RunDir,
                 progress: MeasureProgress | None, on_model_start: Callable[[str], None] | None):
    """Load, measure, write and free each model in turn (both at once with --compare)."""
    import torch

    done: list[ModelMeasurement] = []
    compare = None
    groups = [cfg.models] if cfg.compare else [[spec] for spec in cfg.models]
    with peak_memory() as mem:
        for group in groups:
            loaded = []
            for spec in group:
                if on_model_start:
                    on_model_start(spec)
                loaded.append(load_model(spec, dtype=cfg.dtype, device=cfg.device,
                                         device_map=cfg.device_map, trust_remote_code=cfg.trust_remote_code,
                                         lm_head=cfg.include_logits, tokenizer=cfg.tokenizer, seed=cfg.seed))
            start = time.perf_counter()
            if cfg.compare:
                res_a, res_b, cka, pairs = measure_sites(loaded[0], texts, cfg, progress, partner=loaded[1])
                measured = [res_a, res_b]
                compare = cka_frame(cka, pairs, cfg)
            else:
                measured = [measure_sites(loaded[0], texts, cfg, progress)]
            wall = time.perf_counter() - start
            for item, res in zip(loaded, measured):
                done.append(_finish_model(run, item, res, cfg, corpus, wall))
            del loaded, measured
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return done, compare, mem


def _finish_model(run: RunDir, loaded: LoadedModel, measured: SiteResults, cfg: MeasureConfig, corpus: str,
                  wall: float) -> ModelMeasurement:
    device = str(loaded.model.get_input_embeddings().weight.device)
    dtype = str(loaded.model.dtype).replace("torch.", "")
    layers, summary = summarize(loaded, measured, cfg, corpus, wall, device, dtype)
    for warning in summary["warnings"]:
        logging.getLogger("lmdisp").warning("%s: %s", loaded.spec, warning)
    item = ModelMeasurement(loaded.spec, loaded.source, loaded.num_params, summary["num_layers"],
                            measured.results, summary, layers)
    item.folder = _write_model(run, item, cfg)
    return item


def _site_file(stem: str, site: str, suffix: str) -> str:
    """`heatmap.png` for the default site, `heatmap-<site>.png` for the others."""
    return f"{stem}{suffix}" if site == "hidden" else f"{stem}-{slugify(site)}{suffix}"


def _write_model(run: RunDir, item: ModelMeasurement, cfg: MeasureConfig) -> Path:
    from lmdisp.runs import write_text

    folder = run.path / slugify(item.spec)
    for i in range(2, 1000):  # the same model twice in one call gets a second folder
        if not folder.exists():
            break
        folder = run.path / f"{slugify(item.spec)}-{i}"
    write_table(item.layers, folder / "layers")
    write_json(folder / "summary.json", {**item.summary, "config": as_dict(cfg), **provenance()})
    positions = positions_frame(item.results, item.num_layers)
    write_text(folder / "positions.csv", positions.to_csv(index=False, float_format="%.6g"))
    if cfg.plots:
        from lmdisp.plots import condensation_heatmap, position_plot

        for site, result in item.results.items():
            title = item.spec if site == "hidden" else f"{item.spec} · {site}"
            hist = layer_histograms(result.mean_matrices)
            save_figure(condensation_heatmap(hist, title=title), folder / _site_file("heatmap", site, ".png"))
            save_figure(position_plot(positions[positions["site"] == site], item.summary["sites"][site], title=title),
                        folder / _site_file("positions", site, ".png"))
    if cfg.save_matrices:
        arrays = {}
        for site, result in item.results.items():
            arrays[_site_file("cossim_by_layer", site, "")] = result.mean_matrices
            if result.logits_matrix is not None:
                arrays["cossim_logits"] = result.logits_matrix
        save_npz(folder / "matrices.npz", **arrays)
    return folder
