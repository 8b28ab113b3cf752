"""`lmdisp prepare`: build the token shards of a training run on their own (e.g. on a CPU node
before the GPU job); `midtrain`/`pretrain` with the same data settings then start at once.

    lmdisp prepare --config configs/pretrain/qwen3-0.6b-dispersion.yaml      # a training config as it is
    lmdisp prepare --model gpt2 --dataset wikitext --train-tokens 200M
    lmdisp prepare --model random:tiny-gpt2 --dataset corpus.jsonl --train-tokens 1M --context-length 128
"""

from __future__ import annotations

from pathlib import Path

from lmdisp.cli.options import config_command
from lmdisp.cli.ui import console
from lmdisp.train.data_config import DataConfig


def _kind(config: str | None) -> str:
    """Named configs: training configs of either command (midtrain first)."""
    from lmdisp.config import named_configs

    if config and not Path(config).exists() and config in named_configs("pretrain") \
            and config not in named_configs("midtrain"):
        return "pretrain"
    return "midtrain"


def _run(config, sets, flags) -> None:
    from lmdisp.cli.ui import shard_progress
    from lmdisp.config import load_config
    from lmdisp.train.config import TrainConfig
    from lmdisp.train.run import run_prepare

    # A training config YAML is read for its data settings (its loss, lr, ... do not change the
    # shards); --set and flags take data keys only.
    cfg = load_config(DataConfig, config, sets, flags, kind=_kind(config), part_of=TrainConfig)
    info = run_prepare(cfg, progress=shard_progress())
    verb = "built" if info["built"] else "found"
    console.print(f"prepare: {verb} {info['blocks']:,} blocks of {info['context_length']} tokens "
                  f"({info['held_out']} held out, {info['train_blocks']:,} for training; {info['dtype']}, "
                  f"{info['bytes_per_token']:.1f} bytes/token) in {info['seconds']:.1f} s: [bold]{info['path']}[/]")


prepare = config_command(DataConfig, "prepare", "Build the token shards of a training run (tokenise once, "
                         "streaming, into memory-mapped blocks) without training.", _run)
