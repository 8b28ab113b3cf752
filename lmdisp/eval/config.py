"""`EvaluateConfig` and its presets: every setting of `lmdisp evaluate`.

A preset is a named config shipped under `configs/eval/` (`--preset paper` is
`--config paper`); its keys are `EvaluateConfig` fields. `tasks` given with a preset selects
those tasks, each keeping the preset's n-shot and metric.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from lmdisp.config import (DEVICE_PANEL, MODEL_PANEL, OUTPUT_PANEL, Dtype, NonNegativeInt, Positive, PositiveInt,
                           load_config, option, read_yaml, require, resolve_config, validate)
from lmdisp.errors import ConfigError
from lmdisp.models import DEFAULT_MODEL, DEVICE_PATTERN
from lmdisp.runs import check_output_option

Backend = Literal["hf", "vllm"]
_TASK_KEYS = {"num_fewshot", "metric"}
_WHAT, _HOW, _MODEL, _DEVICE, _OUT = "Tasks", "Protocol", MODEL_PANEL, DEVICE_PANEL, OUTPUT_PANEL


@dataclass
class EvaluateConfig:
    model: str = option(DEFAULT_MODEL, "Hub id, local folder, .gguf, alias, random:<config>, or a midtrain/"
                        "pretrain/distill run folder (its final/ model).", short="-m", panel=_MODEL)
    tasks: Any = option(None, "Comma-separated lm-eval task names; with --preset, a subset of its tasks "
                        "(--list-tasks PATTERN prints the names lm-eval knows).",
                        short="-t", panel=_WHAT)
    preset: str | None = option(None, "The named preset or YAML the config came from.", cli="fixed")
    checkpoints: Literal["final", "all", "trained"] = option(
        "final", "final: a training run's final/ model | all: its starting model (step 0) and every saved "
        "checkpoint, one evaluation each (<output>/step-N) labelled with its training step, for `report --select` | "
        "trained: the checkpoints without step 0.", panel=_WHAT)
    include_path: list[str] | None = option(None, "Folder(s) of your own task YAMLs (local data files: the way "
                                            "to run offline).", panel=_WHAT)
    num_fewshot: Optional[NonNegativeInt] = option(None, "Shots for every task (None: the preset's per-task value, else the "
                                     "task's own).", panel=_HOW)
    limit: Optional[Positive] = option(None, "Examples per task (per subtask of a group); < 1: a fraction.", panel=_HOW)
    seed: int | None = option(None, "Random, numpy, torch and few-shot seed (None: the training run's, else 1).",
                              panel=_HOW)
    gen_kwargs: str | None = option(None, "Generation settings for generative tasks, e.g. "
                                    "do_sample=False,max_gen_toks=256.", panel=_HOW)
    batch_size: int | str | None = option(None, "An integer or auto (None: auto on a GPU, 8 on a CPU).",
                                          panel=_DEVICE)
    max_batch_size: PositiveInt = option(64, "The ceiling of batch size auto.", cli="set")
    backend: Backend = option("hf", "vllm when installed.", panel=_DEVICE)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, mps.", panel=_DEVICE)
    dtype: Dtype = option("auto", "Weight dtype (auto: the checkpoint's own, as lm-eval's dtype=auto and on every "
                          "command).", panel=_MODEL)
    tokenizer: str | None = option(None, "Tokenizer to use instead of the model's own.", panel=_MODEL)
    trust_remote_code: bool = option(False, "Allow model repos to run their own Python code (only for repos "
                                     "you trust).", panel=_MODEL)
    log_samples: bool = option(False, "Write every response to samples/<task>.jsonl.", panel=_OUT)
    base_model: str | None = option(None, "Report label (None: the training run's model, else --model).",
                                    panel=_OUT)
    method: str | None = option(None, "Report label (None: the training run's loss, else base).", panel=_OUT)
    output: str | None = option(None, "Exact run folder (new or empty).", short="-o", panel=_OUT)
    results_dir: str = option("results", "Where timestamped run folders go.", panel=_OUT)

    def __post_init__(self):
        validate(self)  # each field's type, choices and range (lmdisp.config); below: the rest
        self.tasks = normalize_tasks(self.tasks)
        require(bool(self.tasks), "give --tasks (e.g. arc_easy,mmlu) or --preset paper")
        if isinstance(self.include_path, str):
            self.include_path = [p for p in self.include_path.split(",") if p]
        self.include_path = [str(Path(p).expanduser()) for p in self.include_path or []]
        for folder in self.include_path:
            require(Path(folder).is_dir(), f"--include-path: not a folder: {folder}")
        if self.limit is not None:
            self.limit = int(self.limit) if float(self.limit) >= 1 and float(self.limit).is_integer() else self.limit
        if isinstance(self.batch_size, str) and self.batch_size.isdigit():
            self.batch_size = int(self.batch_size)
        require(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1)
                or (isinstance(self.batch_size, str) and re.fullmatch(r"auto(:\d+)?", self.batch_size) is not None),
                f"--batch-size must be a positive integer or auto (got {self.batch_size!r})")
        if self.gen_kwargs is not None:
            bad = [kv for kv in self.gen_kwargs.split(",") if not re.fullmatch(r"\s*[A-Za-z_]\w*\s*=[^=]*", kv)]
            if bad:
                raise ConfigError(f"--gen-kwargs {self.gen_kwargs!r}: expected key=value pairs separated by commas, "
                                  f"e.g. do_sample=false,max_gen_toks=256 (not {bad[0]!r})")
        require(self.backend != "vllm" or importlib.util.find_spec("vllm") is not None,
                "--backend vllm needs the `vllm` package (pip install vllm); or use --backend hf")
        require(re.fullmatch(DEVICE_PATTERN, self.device) is not None,
                f"--device {self.device!r}: choose auto, cpu, cuda, cuda:N or mps")
        check_output_option(self.output)


def normalize_tasks(tasks: Any) -> dict[str, dict[str, Any]]:
    """Any accepted form of the task list -> {task: {"num_fewshot": n | None, "metric": m | None}}."""
    if tasks is None:
        return {}
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if isinstance(tasks, (list, tuple)):
        tasks = {t: None for t in tasks}
    require(isinstance(tasks, dict), "tasks: expected a comma list, a list or a mapping task -> settings")
    out = {}
    for name, settings in tasks.items():
        require(settings is None or isinstance(settings, dict), f"task `{name}`: expected a mapping of settings")
        settings = dict(settings or {})
        bad = sorted(set(settings) - _TASK_KEYS)
        require(not bad, f"task `{name}`: unknown setting(s) {', '.join(bad)}; valid: {', '.join(sorted(_TASK_KEYS))}")
        out[str(name)] = {"num_fewshot": settings.get("num_fewshot"), "metric": settings.get("metric")}
    return out


def is_preset(name: str) -> bool:
    """A shipped preset name or an eval YAML (not a comma list of tasks)."""
    from lmdisp.config import named_configs

    return "," not in name and (name.endswith((".yaml", ".yml")) or name in named_configs("eval"))


def load_evaluate_config(preset: str | None = None, overrides: dict[str, Any] | None = None,
                         sets: list[str] | None = None, config_option: str = "--preset") -> EvaluateConfig:
    """Defaults < the preset's YAML < `--set` < non-None `overrides` (flags)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if preset is not None and "tasks" in overrides:
        preset_tasks = normalize_tasks(read_yaml(resolve_config(preset, "eval", config_option)).get("tasks"))
        overrides["tasks"] = {t: preset_tasks.get(t) for t in normalize_tasks(overrides["tasks"])}
    return load_config(EvaluateConfig, preset, sets, overrides, kind="eval",
                       fixed={"preset": preset} if preset else None, config_option=config_option)
