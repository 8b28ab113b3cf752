"""`lmdisp distill`: train a student on cross-entropy + distillation from a teacher (+ optional regulariser).

    lmdisp distill --model Qwen/Qwen2.5-0.5B --teacher Qwen/Qwen2.5-7B --loss dispersion
    lmdisp distill --model random:tiny-llama --teacher smollm2-135m --dataset builtin \\
        --train-tokens 50k --context-length 64 --set distill_alpha=0.7 --set distill_temperature=2

Options are `midtrain`'s plus `--teacher`; `distill_alpha` (0.5) and `distill_temperature`
(2.0) come from `--set` or the YAML config.
"""

from cli.train_options import make_command

distill = make_command(
    "distill",
    "Distil a teacher into a student: (1 - alpha) CE + alpha T^2 KL(teacher || student) + lambda * regulariser.",
    init="pretrained",
)
