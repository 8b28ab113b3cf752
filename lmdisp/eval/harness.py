"""`lmdisp evaluate`: lm-evaluation-harness on any lmdisp model, the paper's protocol as a preset.

    from lmdisp.eval import load_evaluate_config, run_evaluate
    run = run_evaluate(load_evaluate_config("paper", {"model": "results/midtrain/<run>"}))
    print(run.path, run.table)

Scoring is lm-eval's own. The model is loaded through `lmdisp.models` (aliases, GGUF files,
`random:<config>`, and training run folders, which resolve to their `final/`), wrapped in
lm-eval's `HFLM` (or `VLLM`) and handed to `lm_eval.simple_evaluate` with every seed set.
`simple_evaluate` takes one `num_fewshot`, so tasks are evaluated in one call per distinct
n-shot on the same loaded model (the paper preset: two calls, 0 and 1 shot) and the raw
results are merged. Task names are checked and task data loaded before any weights load.

Run folder: `lm_eval_results.json` (lm-eval's raw results, samples left out),
`tasks.csv/.md` (one row per task: its reported metric in %, stderr, n-shot, limit, n),
`metrics.csv/.md` (every metric of every task and subtask), `samples/<task>.jsonl` with
`log_samples`, and `manifest.json` (config, model, report labels, batch size, versions,
wall time). The training commands' periodic evaluation (`evaluate_in_training`) writes the
same files.

A killed evaluation resumes from lm-eval's request cache in its run folder (`lmdisp.eval.resume`).
"""

from __future__ import annotations

import difflib
import random
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmdisp.config import require
from lmdisp.errors import ConfigError, DataError, Interrupted
from lmdisp.eval.config import EvaluateConfig, is_preset, load_evaluate_config
from lmdisp.eval.progress import RequestProgress, progress_lm, bootstrap_in_process, quiet_git_describe
from lmdisp.eval.results import EvaluateRun, write_evaluation
from lmdisp.eval.resume import CACHE_DIR, answers_cached, cache_identity, resumable_run, unfinished
from lmdisp.eval.tasks import broken_task_yaml, hub_data_problem, template_problem
from lmdisp.runfolder import TrainingRun
from lmdisp.runs import RunDir, write_json

CPU_BATCH_SIZE = 8       # batching helps on a CPU too (bench/eval_speed.py); "auto" probes GPU memory
DEFAULT_SEED = 1         # a model that is not a training run; the paper's seeds are 1, 2, 3
Stage = Callable[[str], None]


# ----------------------------------------------------------------------------- tasks

def task_manager(include_path: list[str], names: list[str]):
    """lm-eval's TaskManager. Only your folders (fast) when they define every task asked for."""
    from lm_eval.tasks import TaskManager

    if include_path:
        own = TaskManager(include_path=include_path, include_defaults=False)
        if all(n in own.task_index for n in names):
            return own
        broken_task_yaml(include_path, [n for n in names if n not in own.task_index])  # before the slow index
    return TaskManager(include_path=include_path or None)


def check_task_names(tm, names: list[str], include_path: list[str]) -> None:
    unknown = [n for n in names if n not in tm.task_index]
    if not unknown:
        return
    broken_task_yaml(include_path, unknown)
    hints = [f"`{n}` (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(n, tm.all_tasks, 3))
             else f"`{n}`" for n in unknown]
    where = "lm-eval's registry" + (f" or {', '.join(include_path)}" if include_path else "")
    raise ConfigError(f"unknown task(s) {', '.join(hints)}: not in {where}; "
                      "task YAMLs of your own go in a folder given with --include-path")


def load_tasks(tm, plan: dict[str, dict], include_path: list[str] = ()) -> tuple[dict[str, dict], dict[Any, list]]:
    """Build every task (downloads/reads its data) -> (plan with tags expanded, {n_shot: objects})."""
    expanded: dict[str, dict] = {}
    by_shot: dict[Any, list] = {}
    owner: dict[str, str] = {}  # leaf task -> the requested name it belongs to
    for name, settings in plan.items():
        try:  # the data libraries raise many exception types for a missing or unreadable dataset
            loaded = tm.load([name])
        except Exception as exc:  # noqa: BLE001
            template = template_problem(exc, name, include_path)
            if template:
                raise ConfigError(template) from None
            hub = hub_data_problem(tm, name, exc)
            if hub:
                raise DataError(hub) from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"cannot load task `{name}`: {first}; offline, task data must be cached or "
                            "local (a task YAML with dataset_path: json, via --include-path)") from None
        if name in loaded["groups"] or name in loaded["tasks"]:
            objs, names = [loaded["groups"][name] if name in loaded["groups"] else loaded["tasks"][name]], [name]
        else:  # a tag: its tasks, each reported on its own
            objs, names = list(loaded["tasks"].values()), list(loaded["tasks"])
        for obj, leaf in zip(objs, names):
            _check_metric(obj, leaf, settings["metric"])
            for inner in ([t.task_name for t in obj.get_all_tasks()] if hasattr(obj, "get_all_tasks") else [leaf]):
                require(owner.setdefault(inner, leaf) == leaf, f"task `{inner}` is asked for twice (in "
                        f"`{owner[inner]}` and `{leaf}`); lm-eval evaluates a task once: drop one of them")
            expanded[leaf] = settings
            by_shot.setdefault(settings["num_fewshot"], []).append(obj)
    return expanded, by_shot


def _check_metric(obj, name: str, metric: str | None) -> None:
    if metric is None:
        return
    if hasattr(obj, "get_all_tasks"):  # a group reports what it aggregates
        known = [a.metric for a in getattr(obj, "aggregate_metric_list", None) or []]
    else:
        known = list(getattr(obj, "_metric_fn_list", {}))
    require(not known or metric in known, f"task `{name}` has no metric `{metric}`; it reports {', '.join(known)}")


# ----------------------------------------------------------------------------- models

@dataclass
class ModelTarget:
    spec: str                   # as given
    load: str                   # what lmdisp.models loads (a training run's final/)
    training: dict | None       # the training run's config.yaml, when the model is one
    run: str | None = None
    labels: dict | None = None  # the training run's report labels (its manifest)


def resolve_model(spec: str) -> ModelTarget:
    """A training run folder -> its `final/` (`lmdisp.runfolder`), with the run's config and
    labels; a checkpoint or final/ of a run keeps its spec and gets the run's; anything else as is."""
    from lmdisp.runfolder import model_folder

    path = Path(spec).expanduser()
    run = TrainingRun.containing(path) if path.is_dir() else None
    if run is None:
        return ModelTarget(spec, spec, None)
    load = str(model_folder(path)) if run.path == path else spec
    return ModelTarget(spec, load, run.config, str(run.path), run.labels)


def report_labels(cfg: EvaluateConfig, target: ModelTarget, seed: int) -> dict[str, Any]:
    """(base model, method, seed) of the report row: flags, else the training run's, else the spec."""
    train, labels = target.training, target.labels or {}
    base = labels.get("base_model") or (train and train.get("model"))
    method = labels.get("method") or (train and train.get("loss"))
    return {"base_model": cfg.base_model or base or target.spec,
            "method": cfg.method or method or "base",
            "seed": int(train.get("seed", seed)) if train else seed}


def eval_batch_size(batch_size: Any, device_type: str) -> Any:
    return batch_size if batch_size is not None else ("auto" if device_type == "cuda" else CPU_BATCH_SIZE)


def build_lm(cfg: EvaluateConfig, target: ModelTarget, seed: int):
    """lm-eval's model object for the target, and what was loaded (for the manifest)."""
    from lmdisp.models import classify, gguf_to_folder, load_model

    if cfg.backend == "vllm":
        source, location = classify(target.load)
        if source == "random":
            raise ConfigError("--backend vllm loads weights from a folder or hub id, not random:<config>")
        if source in ("alias", "gguf"):
            location = str(gguf_to_folder(Path(location)))
        from lm_eval.models.vllm_causallms import VLLM

        batch = cfg.batch_size or "auto"
        dtype = cfg.dtype  # auto: vLLM's own, the checkpoint's (fp16 for a float32 one)
        lm = VLLM(pretrained=location, tokenizer=cfg.tokenizer or location, dtype=dtype, batch_size=batch,
                  max_batch_size=cfg.max_batch_size, seed=seed, trust_remote_code=cfg.trust_remote_code)
        return lm, {"source": source, "location": location, "device": "cuda", "dtype": dtype, "batch_size": batch}
    loaded = load_model(target.load, dtype=cfg.dtype, device=cfg.device, lm_head=True, tokenizer=cfg.tokenizer,
                        trust_remote_code=cfg.trust_remote_code, seed=seed)
    device = loaded.model.get_input_embeddings().weight.device
    batch = eval_batch_size(cfg.batch_size, device.type)
    info = {"source": loaded.source, "location": loaded.location, "num_params": loaded.num_params,
            "device": str(device), "dtype": str(loaded.model.dtype).replace("torch.", ""), "batch_size": batch}
    return hf_lm(loaded.model, loaded.tokenizer, batch, cfg.max_batch_size), info


def hf_lm(model, tokenizer, batch_size: Any, max_batch_size: int = 64):
    """lm-eval's HF wrapper around a model already in memory."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_batch_size=max_batch_size)


# ----------------------------------------------------------------------------- evaluation

def evaluate_tasks(lm, by_shot: dict[Any, list], cfg: EvaluateConfig, seed: int, tm, stage: Stage | None = None,
                   cache: Path | None = None, progress: RequestProgress | None = None) -> dict:
    """`simple_evaluate` once per n-shot group, all seeds = `seed`; the raw results merged.
    `cache`: lm-eval's request cache (a path prefix; it appends `_rank<i>.db`). `progress`
    hears of every answered request (`lmdisp.eval.progress`)."""
    from lm_eval import simple_evaluate

    merged: dict[str, Any] = {}
    calls = []
    for n_shot, objs in by_shot.items():
        if stage:
            shot = "task default" if n_shot is None else f"{n_shot}-shot"
            stage(f"evaluating {', '.join(_obj_name(o) for o in objs)} ({shot})")
        start = time.perf_counter()
        model = progress_lm(lm, progress) if progress else lm
        with quiet_git_describe(), bootstrap_in_process():
            out = simple_evaluate(model=model, tasks=objs, num_fewshot=n_shot, limit=cfg.limit,
                                  gen_kwargs=cfg.gen_kwargs, task_manager=tm, log_samples=cfg.log_samples,
                                  batch_size=cfg.batch_size, random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed,
                                  use_cache=str(cache) if cache else None)
        calls.append({"num_fewshot": n_shot, "tasks": [_obj_name(o) for o in objs], "config": out.get("config"),
                      "wall_time_s": round(time.perf_counter() - start, 3)})
        for key, value in out.items():
            if isinstance(value, dict) and key != "config":
                merged.setdefault(key, {}).update(value)
            else:
                merged.setdefault(key, value)
    merged["lmdisp_calls"] = calls
    return merged


def _obj_name(obj) -> str:
    return getattr(obj, "task_name", None) or obj.name


def run_evaluate(cfg: EvaluateConfig, stage: Stage | None = None, training_step: int | None = None,
                 progress: RequestProgress | None = None) -> EvaluateRun:
    """Check names and model, load task data, then the model; evaluate; write the run folder.
    `training_step` labels the evaluation of a checkpoint (see `lmdisp.eval.checkpoints`);
    `progress` hears of every answered request. Ctrl-C raises `Interrupted` naming the folder
    whose request cache a re-run with `--output` continues from."""
    from lmdisp.models import check_model, default_tokenizer, load_tokenizer, resolve_device

    if not unfinished(cfg.output):  # before any work: no result lost (a killed run's cache is resumed)
        RunDir.check("evaluate", root=cfg.results_dir, output=cfg.output)
    RunDir.check_free(cfg.output)  # a killed evaluation's folder: refused while another process writes it
    resolve_device(cfg.device)
    target = resolve_model(cfg.model)
    check_model(target.load, trust_remote_code=cfg.trust_remote_code)
    load_tokenizer(cfg.tokenizer or default_tokenizer(target.load), trust_remote_code=cfg.trust_remote_code)
    seed = cfg.seed if cfg.seed is not None else int((target.training or {}).get("seed", DEFAULT_SEED))
    labels = report_labels(cfg, target, seed)
    tm = task_manager(cfg.include_path, list(cfg.tasks))
    check_task_names(tm, list(cfg.tasks), cfg.include_path)
    plan = _plan(cfg)
    if stage:
        stage("loading task data")
    plan, by_shot = load_tasks(tm, plan, cfg.include_path)
    identity = cache_identity(cfg, target)
    run, resumed = resumable_run(cfg, target, identity)
    cache = run.path / CACHE_DIR
    try:
        if stage:
            stage(f"loading {target.spec}" + (" (resuming: answers already in the request cache are reused)"
                                              if resumed else ""))
        lm, model_info = build_lm(cfg, target, seed)
        write_json(cache / "identity.json", identity)
        raw = evaluate_tasks(lm, by_shot, cfg, seed, tm, stage, cache=cache / "requests", progress=progress)
    except BaseException as exc:
        kept = answers_cached(cache)
        if not kept:  # nothing to resume: leave nothing behind
            shutil.rmtree(cache, ignore_errors=True)
        run.discard_if_empty()
        if isinstance(exc, KeyboardInterrupt) and kept:  # Ctrl-C, or SIGTERM (Terminated keeps its exit code)
            stopped = type(exc) if isinstance(exc, Interrupted) else Interrupted
            raise stopped(f"evaluation stopped; the answers so far are kept in {cache}", output=run.path,
                          hint=f"the same command with --output {run.path} continues from them") from None
        raise
    return write_evaluation(run, raw, plan, cfg, seed=seed, labels=labels, model=target.spec,
                            model_info=model_info, training_run=target.run, training=target.training,
                            training_step=training_step)


def _plan(cfg: EvaluateConfig) -> dict[str, dict]:
    """Per-task settings after `--num-fewshot` (which applies to every task)."""
    if cfg.num_fewshot is None:
        return {t: dict(s) for t, s in cfg.tasks.items()}
    return {t: {**s, "num_fewshot": cfg.num_fewshot} for t, s in cfg.tasks.items()}


# ----------------------------------------------------------------------------- in training

def evaluate_in_training(model, tokenizer, tasks: str, out_dir: Path | str, labels: dict | None = None,
                         **overrides) -> EvaluateRun:
    """Evaluate a model in memory (the training hook): `tasks` is a comma list, a preset name
    or an eval YAML. Writes the run folder `out_dir` (a sibling `-2`, ... if it holds results),
    leaves the model in the mode it was in and the global RNG states as they were."""
    out_dir = Path(out_dir)
    preset = is_preset(tasks)
    cfg = load_evaluate_config(tasks if preset else None, {**({} if preset else {"tasks": tasks}), **overrides,
                                                           "model": "<in-memory>"})
    run_folder = TrainingRun.containing(out_dir)
    train = run_folder.config if run_folder else None
    seed = cfg.seed if cfg.seed is not None else int((train or {}).get("seed", DEFAULT_SEED))
    target = ModelTarget("<in-memory>", "<in-memory>", train, str(run_folder.path) if run_folder else None, labels)
    tm = task_manager(cfg.include_path, list(cfg.tasks))
    check_task_names(tm, list(cfg.tasks), cfg.include_path)
    plan, by_shot = load_tasks(tm, _plan(cfg), cfg.include_path)
    device = next(model.parameters()).device
    batch = eval_batch_size(cfg.batch_size, device.type)
    was_training = model.training
    with _rng_preserved(), _quiet_lm_eval():
        try:
            raw = evaluate_tasks(hf_lm(model, tokenizer, batch, cfg.max_batch_size), by_shot, cfg, seed, tm)
        finally:
            model.train(was_training)
    run = RunDir.create("evaluate", "", output=_free_folder(out_dir))
    step = re.fullmatch(r"step-(\d+)", out_dir.name)
    return write_evaluation(run, raw, plan, cfg, seed=seed, labels=report_labels(cfg, target, seed),
                            model=cfg.model, model_info={"device": str(device), "batch_size": batch,
                                                         "dtype": str(model.dtype).replace("torch.", "")},
                            training_run=target.run, training=train,
                            training_step=int(step.group(1)) if step else None)


def _free_folder(path: Path) -> Path:
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    for i in range(2, 1000):
        other = path.with_name(f"{path.name}-{i}")
        if not other.exists():
            return other
    raise ConfigError(f"no free folder name next to {path}")


@contextmanager
def _quiet_lm_eval():
    """lm-eval's INFO/WARNING lines would break the training progress bar; errors still show."""
    import logging

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _rng_preserved():
    """simple_evaluate seeds the global RNGs: keep the training run's streams untouched."""
    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])
