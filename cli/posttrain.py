"""`lmdisp sft | dpo | grpo`: post-training with TRL, optionally with a hidden-state regulariser
added to TRL's own loss (`lmdisp.train.posttrain`); midtrain's run folder and resume rules.

    lmdisp sft --dataset chat.jsonl --loss dispersion --lambda 0.1
    lmdisp dpo --dataset prefs.jsonl --model results/sft/RUN/final --set beta=0.1
    lmdisp grpo --dataset maths.jsonl --reward answer --num-generations 4 --loss dispersion
"""

from __future__ import annotations

import os

from lmdisp.cli.options import config_command
from lmdisp.cli.ui import console
from lmdisp.train.posttrain_config import PostTrainConfig

_DOCS = {
    "sft": "Supervised fine-tuning with TRL's SFTTrainer (chat data through the model's chat template; "
           "completion-only loss for prompt/completion rows) + lambda * regulariser.",
    "dpo": "Direct preference optimisation with TRL's DPOTrainer (prompt, chosen, rejected) + lambda * regulariser.",
    "grpo": "Online RL with TRL's GRPOTrainer and rule-based rewards (--reward) + lambda * regulariser.",
}


def _runner(command: str):
    def run(config, sets, flags) -> None:
        from lmdisp.cli.ui import training_progress
        from lmdisp.config import load_config
        from lmdisp.train.posttrain_run import run_posttrain

        cfg = load_config(PostTrainConfig, config, sets, flags, kind=command, fixed={"objective": command})
        run = run_posttrain(cfg, callbacks=[training_progress()])
        if int(os.environ.get("RANK", "0")) == 0:
            console.print(f"{command}: {run.steps} steps; final model [bold]{run.final}[/]; "
                          f"run folder [bold]{run.path}[/]", soft_wrap=True)
    return run


COMMANDS = {name: config_command(PostTrainConfig, name, doc, _runner(name)) for name, doc in _DOCS.items()}
