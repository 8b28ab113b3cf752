"""`lmdisp midtrain`: continue training a pretrained causal LM with an optional regulariser.

    lmdisp midtrain --loss dispersion                                  # paper: GPT-2, wikitext, 200M tokens
    lmdisp midtrain --config configs/midtrain/gpt2-dispersion.yaml --seed 2
    lmdisp midtrain --model random:tiny-gpt2 --dataset builtin --train-tokens 100k --context-length 128
"""

from cli.train_options import make_command

midtrain = make_command(
    "midtrain",
    "Mid-train a pretrained causal LM: cross-entropy + lambda * regulariser (paper Table 2).",
    init="pretrained",
)
