"""`lmdisp pretrain`: train a causal LM from freshly initialised weights (paper Table 5, Figure 3).

    lmdisp pretrain --model tiny-gpt2 --dataset builtin --loss dispersion --train-tokens 100k --context-length 64
    lmdisp pretrain --config configs/pretrain/qwen3-0.6b-dispersion.yaml --seed 1

`--model` names a config (a `configs/models/` name, a hub id or a local folder/JSON); only
its architecture is used. Everything else is `midtrain`'s: the same trainer, losses,
run folder and options.
"""

from cli.train_options import make_command

pretrain = make_command(
    "pretrain",
    "Pre-train a causal LM from scratch (fresh weights from a config): cross-entropy + lambda * regulariser.",
    init="scratch",
)
