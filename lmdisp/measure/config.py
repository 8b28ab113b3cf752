"""`MeasureConfig`: every setting of `lmdisp measure`; defaults are the paper's protocol
(Figure 2: 100 repetitions of 512 tokens from wikitext-103, texts of 1024-1280 words)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import annotated_types as at

from lmdisp.config import (DEVICE_PANEL, MODEL_PANEL, OUTPUT_PANEL, Dtype, NonNegativeInt, OpenUnit, PositiveInt,
                           option, require, validate)
from lmdisp.models import DEFAULT_MODEL, DEVICE_PATTERN
from lmdisp.runs import check_output_option

_DATA, _PROTO, _MODEL, _DEVICE, _OUT = "Text", "Protocol", MODEL_PANEL, DEVICE_PANEL, OUTPUT_PANEL
_SITE = "Sites and positions"


@dataclass
class MeasureConfig:
    models: list[str] = option(None, "Hub ids, local folders, .gguf files, aliases (smollm2-135m), random:<config> "
                               "or training run folders.", cli="arg", factory=lambda: [DEFAULT_MODEL])
    dataset: str = option("wikipedia", "wikipedia|pubmed|imdb|squad (the paper's corpora; wikipedia is "
                          "wikitext-103), wikitext|fineweb-edu (the training corpora), builtin (offline), a local "
                          ".txt/.jsonl/.parquet file or folder, or any HF dataset id.", panel=_DATA)
    text_field: str | None = option(None, "Column holding the text (hub/local datasets).", panel=_DATA)
    split: str = option("train", "Dataset split for hub datasets.", cli="set")
    subset: str | None = option(None, "Dataset config name for hub datasets.", cli="set")
    texts: str | None = option(None, "Fixed texts (.txt one per line, or .jsonl `text`); repetition r uses text "
                               "r mod N.", panel=_DATA)
    repetitions: PositiveInt = option(100, "Texts to average over (paper: 100).", short="-r", panel=_PROTO)
    max_length: Annotated[int, at.Ge(2)] = option(512, "Tokens per text (paper: 512).", panel=_PROTO)
    min_words: PositiveInt = option(1024, "Minimum words per sampled text (paper: 1024).", panel=_PROTO)
    max_words: PositiveInt = option(1280, "Maximum words per sampled text (paper: 1280).", panel=_PROTO)
    seed: int = option(0, "Repetition r samples its text with seed SEED + r (paper: r).", panel=_PROTO)
    batch_size: Optional[PositiveInt] = option(None, "Repetitions per forward pass (None: 1 on a CPU, 8 on a GPU).",
                                    panel=_DEVICE)
    dtype: Dtype = option("float32", "float32 (the authors' and the paper's) | bfloat16 | float16 | auto (the "
                        "checkpoint's own dtype, as on every command; for large models).", panel=_MODEL)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, mps.", panel=_DEVICE)
    device_map: Optional[Literal["auto"]] = option(None, "`auto` spreads a large model over all GPUs.",
                                                   panel=_DEVICE)
    tokenizer: str | None = option(None, "Tokenizer to use instead of the model's own.", panel=_MODEL)
    trust_remote_code: bool = option(False, "Allow model repos to run their own Python code (only for repos "
                                     "you trust).", panel=_MODEL)
    site: list[str] = option(None, "Where to read token vectors, comma-separated, all in one pass: hidden (HF "
                             "hidden states, the paper's), residual (block outputs before any final norm), attn, "
                             "mlp (sublayer outputs), or a module-name pattern such as 'layers.*.mlp.act_fn'.",
                             panel=_SITE, factory=lambda: ["hidden"])
    skip_first: NonNegativeInt = option(0, "Drop the first K token positions from every statistic (e.g. 1: the first "
                             "token / attention sink).", panel=_SITE)
    metrics: list[str] = option(None, "Extra per-layer geometry: entropy,variance (SVD: effective rank, max. "
                                "explainable variance), centred (centred cosine), isoscore, rogue (top-k "
                                "dimensions' share of the cosine), or all.", panel=_OUT, factory=list)
    rogue_k: PositiveInt = option(3, "k of the `rogue` metric: the share of the cosine carried by the top-k dimensions.",
                          cli="set")
    bootstrap: NonNegativeInt = option(1000, "Bootstrap resamples over repetitions for the confidence intervals (0: none).",
                            panel=_OUT)
    confidence: OpenUnit = option(0.95, "Level of the bootstrap confidence intervals.", cli="set")
    compare: bool = option(False, "With two models: run them in lockstep on the same texts and add linear CKA "
                           "between corresponding layers (both models are held in memory).", panel=_OUT)
    include_logits: bool = option(False, "Add the output logits as an extra layer.", panel=_OUT)
    save_matrices: bool = option(False, "Write the (L+1, S, S) mean matrices as matrices.npz.", panel=_OUT)
    plots: bool = option(True, "Write the heatmap and trend plots.", panel=_OUT)
    output: str | None = option(None, "Exact run folder (new or empty).", short="-o", panel=_OUT)
    results_dir: str = option("results", "Where timestamped run folders go.", panel=_OUT)

    def __post_init__(self):
        from lmdisp.measure.condensation import METRICS

        validate(self)  # each field's type, choices and range (lmdisp.config); below: cross-field rules
        if "all" in self.metrics:
            self.metrics = list(METRICS)
        require(len(self.site) > 0, "--site: give at least one site (hidden, residual, attn, mlp or a pattern)")
        require(len(set(self.site)) == len(self.site), f"--site: a site is listed twice ({','.join(self.site)})")
        require(self.max_length < 2 or self.max_length - self.skip_first >= 2,  # (--max-length checked below)
                f"--skip-first {self.skip_first} leaves fewer than 2 of the --max-length {self.max_length} tokens")
        require(not self.compare or len(self.models) == 2,
                f"--compare needs exactly two models (got {len(self.models)})")
        require(len(self.models) > 0, "give at least one model")
        require(self.max_words >= self.min_words,
                f"--max-words ({self.max_words}) must be >= --min-words ({self.min_words})")
        require(re.fullmatch(DEVICE_PATTERN, self.device) is not None,
                f"--device {self.device!r}: choose auto, cpu, cuda, cuda:N or mps")
        bad = sorted(set(self.metrics) - set(METRICS))
        require(not bad, f"--metrics: unknown {', '.join(bad)}; choose from {', '.join(METRICS)} or all")
        check_output_option(self.output)
