"""The shipped configs (installed as `lmdisp.configs`, read through `importlib.resources`):
models/ (random-init architectures), midtrain/, pretrain/ (training recipes), eval/
(evaluation presets), accelerate/ (launcher configs)."""
