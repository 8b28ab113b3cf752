"""`DataConfig`: the data settings of a training run, what `lmdisp prepare` needs to build its
token shards on their own (e.g. on a CPU node before the GPU job).

`TrainConfig` extends it (`class TrainConfig(DataConfig)`): the same fields, names, help and
checks, so `lmdisp prepare --config <a training config>` builds exactly the shards the
training run will read, and `prepare --set` of a training-only key is refused with the list of
data keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import annotated_types as at

from lmdisp.config import MODEL_PANEL, NonNegativeInt, PositiveInt, option, require, validate
from lmdisp.errors import ConfigError

_MODEL, _DATA, _OPT = MODEL_PANEL, "Data", "Budget"
# How records become blocks (`lmdisp.train.shards`): one continuous token stream (transformers'
# run_clm), or the authors' HF scripts' packing per batch of 1000 records, each batch's tail
# dropped (docs/fidelity.md D2). Separators: none, or each record wrapped in the tokenizer's
# BOS (where it has one) and EOS, as TorchTitan's loader does (docs/fidelity.md P5).
PackingKind = Literal["continuous", "per-1000"]
DocTokens = Literal["none", "bos-eos"]


def parse_tokens(value: int | float | str) -> int:
    """`200M`, `1.5B`, `50k`, `1e6` or a plain integer -> a token count."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(value))
    if not m:
        raise ConfigError(f"--train-tokens {value!r}: expected a number like 200M, 1.5B or 50000")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


@dataclass
class DataConfig:
    """The data settings of a training run: corpus, tokenizer, budget and block length."""

    model: str = option("gpt2", "Hub id, folder, .gguf, alias or random:<config> (pretrain: a config name).",
                        short="-m", panel=_MODEL)
    dataset: str = option("wikitext", "wikitext (wikitext-103-raw-v1), fineweb-edu, measure's corpora (wikipedia, "
                          "pubmed, imdb, squad), builtin (offline), a local file/folder or an HF id.", panel=_DATA)
    text_field: Optional[str] = option(None, "Text column of a hub/local dataset.", panel=_DATA)
    subset: Optional[str] = option(None, "Hub dataset config name.", cli="set")
    split: str = option("train", "Dataset split.", cli="set")
    packing: PackingKind = option("continuous", "How records become blocks: continuous (one token stream; a record "
                              "may straddle two blocks) | per-1000 (the authors' HF scripts: packed per batch of "
                              "1000 records, each batch's tail dropped).", cli="set")
    doc_tokens: DocTokens = option("none", "Tokens around each record: none | bos-eos (the tokenizer's BOS, where "
                                   "it has one, and EOS, as the authors' TorchTitan loader).", cli="set")
    tokenizer: Optional[str] = option(None, "Tokenizer to use instead of the model's own.", panel=_MODEL)
    trust_remote_code: bool = option(False, "Allow model repos to run their own Python code (only for repos "
                                     "you trust).", panel=_MODEL)
    train_tokens: int | str = option("200M", "Token budget: 200M, 1.5B, 50k; steps = tokens / (context x global "
                                     "batch).", panel=_OPT)
    allow_repeat: bool = option(False, "Let a --train-tokens budget larger than the corpus repeat it (epochs); "
                                "off: such a budget is refused, saying how many epochs it would take.", panel=_OPT)
    context_length: Annotated[int, at.Ge(2)] = option(1024, "Tokens per packed block (GPT-2: 1024, Qwen3: 4096).",
                                                      panel=_OPT)
    global_batch: NonNegativeInt = option(0, "Sequences per optimiser step over all processes (paper presets: "
                                          "GPT-2 128, Qwen3 32). > 0: the same steps, LR and tokens per step on any "
                                          "number of GPUs (batch_size x grad_accum is its split on one process; on "
                                          "N the micro-batch and accumulation adapt). 0: batch_size x grad_accum "
                                          "per process.", cli="set")
    condensation_sequences: PositiveInt = option(8, "Held-out blocks measured at each condensation snapshot.",
                                                 cli="set")
    num_proc: Optional[PositiveInt] = option(None, "Tokenizer processes while building token shards (default: the "
                                             "fast tokenizer's own threads).", cli="set")
    cache_dir: Optional[str] = option(None, "Token-shard cache (default: $LMDISP_CACHE/tokens, "
                                      "~/.cache/lmdisp/tokens).", cli="set")

    def __post_init__(self):
        validate(self)  # every field's type, choices and range (lmdisp.config), TrainConfig's too
        self.train_tokens = parse_tokens(self.train_tokens)
        require(self.train_tokens > 0, f"--train-tokens must be > 0 (got {self.train_tokens})")

    def train_blocks(self) -> int:
        """Training blocks the budget reads: train_tokens / context_length, or with a global
        batch every block of the ceil(tokens / step) steps (fidelity T3)."""
        if self.global_batch:
            per_step = self.global_batch * self.context_length
            return -(-self.train_tokens // per_step) * self.global_batch
        return max(1, self.train_tokens // self.context_length)

    def check_repeat(self, corpus_blocks: int, held: int) -> None:
        """Refuse a budget beyond the corpus unless `allow_repeat`, saying how many epochs it means."""
        available = corpus_blocks - held
        if self.allow_repeat or available >= self.train_blocks():
            return
        tokens = available * self.context_length
        raise ConfigError(
            f"--train-tokens {self.train_tokens:,} is {self.train_blocks() * self.context_length / max(tokens, 1):.1f} "
            f"epochs of `{self.dataset}` ({tokens:,} training tokens at --context-length {self.context_length}): add "
            f"--allow-repeat to train on repeated data, or lower --train-tokens to {tokens:,} or less (the token "
            "shards are cached: the next run starts at once)")


def train_blocks(cfg) -> int:
    """`DataConfig.train_blocks` (kept as a function for callers that import it)."""
    return DataConfig.train_blocks(cfg)
