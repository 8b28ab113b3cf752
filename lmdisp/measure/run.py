"""`lmdisp measure`: embedding condensation of one or more models, paper protocol by default.

    from lmdisp.measure import MeasureConfig, run_measure
    run = run_measure(MeasureConfig(models=["smollm2-135m"], dataset="builtin", repetitions=10))
    print(run.path, run.table)

Texts are sampled once and shared by all models of a call; each model is loaded, measured
batch by batch into a `CondensationAccumulator` on its own device, written to its own
sub-folder, and freed before the next one is loaded.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lmdisp.config import as_dict
from lmdisp.data import cycle_texts, load_corpus, read_texts, sample_texts
from lmdisp.errors import DataError
from lmdisp.measure.condensation import CondensationAccumulator, CondensationResult, last_n_means, layer_histograms, trend
from lmdisp.measure.config import MeasureConfig
from lmdisp.models import (LoadedModel, check_model, check_vocabulary, default_tokenizer, load_model,
                           load_tokenizer, resolve_device)
from lmdisp.runs import RunDir, peak_memory, provenance, save_figure, save_npz, slugify, write_json, write_table

Progress = Callable[[str, int, int], None]  # (model spec, repetitions done, total)


@dataclass
class ModelMeasurement:
    spec: str
    source: str
    num_params: int
    num_layers: int
    result: CondensationResult
    summary: dict[str, Any]
    layers: Any  # pandas DataFrame, one row per layer
    folder: Path | None = None


@dataclass
class MeasureRun:
    path: Path
    models: list[ModelMeasurement]
    table: Any  # pandas DataFrame, one row per model


def prepare_texts(cfg: MeasureConfig) -> tuple[list[str], str]:
    """The R texts every model sees, and a label for the corpus."""
    if cfg.texts:
        return cycle_texts(read_texts(cfg.texts), cfg.repetitions), f"texts:{cfg.texts}"
    corpus = load_corpus(cfg.dataset, text_field=cfg.text_field, split=cfg.split, subset=cfg.subset)
    return sample_texts(corpus, cfg.repetitions, seed=cfg.seed, min_words=cfg.min_words,
                        max_words=cfg.max_words), corpus.name


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, Any]:
    """Tokenise and truncate to exactly `max_length` tokens; every text must reach it."""
    import torch

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    short = [(r, n) for r, n in enumerate(lengths) if n < max_length]
    if short:
        r, n = short[0]
        raise DataError(f"text of repetition {r} has only {n} tokens, fewer than --max-length {max_length} "
                        f"({len(short)} of {len(texts)} texts are short); raise --min-words or lower --max-length")
    return {k: torch.tensor(v) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def load_dtype(dtype: str) -> str:
    """`measure --dtype auto` is the checkpoint's own dtype (`models.CHECKPOINT_DTYPE`), not the
    bf16-on-GPU default of the other commands: the paper measures in float32, the default."""
    from lmdisp.models import CHECKPOINT_DTYPE

    return CHECKPOINT_DTYPE if dtype == "auto" else dtype


def resolve_batch_size(batch_size: int | None, device_type: str) -> int:
    """The default trades nothing on a CPU (no speed-up from batching) for throughput on a GPU."""
    return batch_size or (8 if device_type == "cuda" else 1)


def measure_model(loaded: LoadedModel, texts: list[str], cfg: MeasureConfig,
                  progress: Progress | None = None) -> CondensationResult:
    """Stream all repetitions through the model and accumulate the cosine matrices."""
    import torch

    if loaded.max_positions and cfg.max_length > loaded.max_positions:
        raise DataError(f"--max-length {cfg.max_length} exceeds the {loaded.max_positions} positions of "
                        f"`{loaded.spec}`")
    model = loaded.model
    device = model.get_input_embeddings().weight.device
    batch_size = resolve_batch_size(cfg.batch_size, device.type)
    enc = tokenize(loaded.tokenizer, texts, cfg.max_length)
    acc = CondensationAccumulator(cfg.metrics)
    total = len(texts)
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            batch = {k: v[start:start + batch_size].to(device) for k, v in enc.items()}
            out = model(**batch, output_hidden_states=True)
            logits = getattr(out, "logits", None) if cfg.include_logits else None
            acc.update(out.hidden_states, logits)
            del out
            if progress:
                progress(loaded.spec, min(start + batch_size, total), total)
    return acc.result()


def summarize(loaded: LoadedModel, result: CondensationResult, cfg: MeasureConfig, corpus: str,
              wall: float, device: str, dtype: str):
    """Per-layer table and summary dict for one model."""
    import pandas as pd

    m = result.layer_means
    n_layers = len(m) - 1
    rows = {
        "layer": np.arange(len(m)),
        "layer_fraction": np.arange(len(m)) / max(n_layers, 1),
        "mean_cos": m,
        "std_cos": result.rep_means.std(axis=0, ddof=1) if result.num_repetitions > 1 else np.nan,
    }
    for name, values in result.extra.items():
        rows[f"{name}_mean"] = values.mean(axis=0)
        rows[f"{name}_std"] = values.std(axis=0, ddof=1) if len(values) > 1 else np.nan
        if name == "entropy":
            rows["effective_rank"] = np.exp(values).mean(axis=0)
    layers = pd.DataFrame(rows)
    if result.logits_matrix is not None:
        logit_row = {"layer": "logits", "layer_fraction": np.nan,
                     "mean_cos": float(result.logits_matrix.astype(np.float64).mean()),
                     "std_cos": float(result.logits_rep_means.std(ddof=1)) if result.num_repetitions > 1 else np.nan}
        layers = pd.concat([layers, pd.DataFrame([logit_row])], ignore_index=True)
    summary = {
        "model": loaded.spec, "model_source": loaded.source, "model_location": loaded.location,
        "num_params": loaded.num_params, "num_layers": n_layers,
        **trend(m),
        "mean_cos_by_layer": m.tolist(),
        "mean_last_n_layers": {str(i + 1): v for i, v in enumerate(last_n_means(m))},
        "corpus": corpus, "repetitions": result.num_repetitions, "seq_len": int(result.mean_matrices.shape[1]),
        "min_words": cfg.min_words, "max_words": cfg.max_words, "seed": cfg.seed,
        "batch_size": resolve_batch_size(cfg.batch_size, device.split(":")[0]), "dtype": dtype, "device": device, "metrics": list(cfg.metrics),
        "wall_time_s": round(wall, 3),
    }
    return layers, summary


def run_measure(cfg: MeasureConfig, progress: Progress | None = None,
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
        done, mem = _measure_all(cfg, texts, corpus, run, progress, on_model_start)
    except BaseException:
        run.discard_if_empty()  # nothing written yet: leave no empty run folder behind
        raise
    table = pd.DataFrame([{
        "model": d.spec, "params": d.num_params, "layers": d.num_layers,
        "spearman_rho": d.summary["spearman_rho"], "kendall_tau": d.summary["kendall_tau"],
        "mean_cos_first": d.summary["mean_cos_by_layer"][0],
        "mean_cos_last": d.summary["mean_cos_by_layer"][-1],
        "mean_cos_last_quarter": d.summary["mean_last_n_layers"][str(max(1, (d.num_layers + 1) // 4))],
        "wall_time_s": d.summary["wall_time_s"],
    } for d in done])
    write_table(table, run.path / "models")
    if cfg.plots:
        from lmdisp.plots import condensation_trend

        save_figure(condensation_trend([d.spec for d in done], [d.result.layer_means for d in done],
                                       table["spearman_rho"], table["kendall_tau"]), run.path / "trend.png")
    run.write_manifest(as_dict(cfg), corpus=corpus, memory=mem)
    return MeasureRun(run.path, done, table)


def _measure_all(cfg: MeasureConfig, texts: list[str], corpus: str, run: RunDir,
                 progress: Progress | None, on_model_start: Callable[[str], None] | None):
    """Load, measure, write and free each model in turn."""
    import torch

    done: list[ModelMeasurement] = []
    with peak_memory() as mem:
        for spec in cfg.models:
            if on_model_start:
                on_model_start(spec)
            loaded = load_model(spec, dtype=load_dtype(cfg.dtype), device=cfg.device, device_map=cfg.device_map,
                                trust_remote_code=cfg.trust_remote_code, lm_head=cfg.include_logits,
                                tokenizer=cfg.tokenizer, seed=cfg.seed)
            start = time.perf_counter()
            result = measure_model(loaded, texts, cfg, progress)
            device = str(loaded.model.get_input_embeddings().weight.device)
            dtype = str(loaded.model.dtype).replace("torch.", "")
            layers, summary = summarize(loaded, result, cfg, corpus, time.perf_counter() - start, device, dtype)
            item = ModelMeasurement(spec, loaded.source, loaded.num_params, summary["num_layers"],
                                    result, summary, layers)
            item.folder = _write_model(run, item, cfg)
            done.append(item)
            del loaded
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return done, mem


def _write_model(run: RunDir, item: ModelMeasurement, cfg: MeasureConfig) -> Path:
    folder = run.path / slugify(item.spec)
    for i in range(2, 1000):  # the same model twice in one call gets a second folder
        if not folder.exists():
            break
        folder = run.path / f"{slugify(item.spec)}-{i}"
    write_table(item.layers, folder / "layers")
    write_json(folder / "summary.json", {**item.summary, "config": as_dict(cfg), **provenance()})
    if cfg.plots:
        from lmdisp.plots import condensation_heatmap

        hist = layer_histograms(item.result.mean_matrices)
        save_figure(condensation_heatmap(hist, title=item.spec), folder / "heatmap.png")
    if cfg.save_matrices:
        arrays = {"cossim_by_layer": item.result.mean_matrices}
        if item.result.logits_matrix is not None:
            arrays["cossim_logits"] = item.result.logits_matrix
        save_npz(folder / "matrices.npz", **arrays)
    return folder
