"""`lmdisp midtrain | pretrain | distill`: one training path (`lmdisp.train.run_train`), three
starting points.

    lmdisp midtrain --loss dispersion                           # paper: GPT-2, wikitext, 200M tokens
    lmdisp midtrain --config gpt2-dispersion --seed 2           # a shipped config (configs/midtrain/)
    lmdisp midtrain --model random:tiny-gpt2 --dataset builtin --train-tokens 100k --context-length 128
    lmdisp pretrain --model tiny-gpt2 --dataset builtin --loss dispersion --train-tokens 100k --context-length 64
    lmdisp distill --model random:tiny-llama --teacher smollm2-135m --dataset builtin --set distill_alpha=0.7
"""

from __future__ import annotations

import os

from lmdisp.cli.options import config_command
from lmdisp.cli.session import quiet_stderr
from lmdisp.cli.ui import console
from lmdisp.train.config import TrainConfig

_INIT = {"midtrain": "pretrained", "pretrain": "scratch", "distill": "pretrained"}
_DOCS = {
    "midtrain": "Mid-train a pretrained causal LM: cross-entropy + lambda * regulariser (paper Table 2).",
    "pretrain": "Pre-train a causal LM from scratch (fresh weights from a config): cross-entropy + lambda * "
                "regulariser (paper Table 5, Figure 3). --model names a config; only its architecture is used.",
    "distill": "Distil a teacher into a student: (1 - alpha) CE + alpha T^2 KL(teacher || student) + lambda * "
               "regulariser.",
}


def _runner(command: str):
    def run(config, sets, flags) -> None:
        from lmdisp.cli.ui import shard_progress, training_progress
        from lmdisp.config import load_config
        from lmdisp.train import run_train

        cfg = load_config(TrainConfig, config, sets, flags, kind=command, fixed={"init": _INIT[command]})
        with quiet_stderr():  # the training hook's lm-eval bars: to the log
            run = run_train(cfg, command=command, callbacks=[training_progress()], data_progress=shard_progress())
        if int(os.environ.get("RANK", "0")) == 0:  # one line, from the main process only
            console.print(f"{command}: {run.steps} steps; final model [bold]{run.final}[/]; "
                          f"run folder [bold]{run.path}[/]", soft_wrap=True)
    return run


COMMANDS = {name: config_command(TrainConfig, name, doc, _runner(name)) for name, doc in _DOCS.items()}
