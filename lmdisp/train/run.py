"""`run_train`: one training run (midtrain / pretrain) from a `TrainConfig` to a run folder.

    from lmdisp.train import TrainConfig, run_train
    run_train(TrainConfig(model="random:tiny-gpt2", dataset="builtin", loss="dispersion",
                          train_tokens="200k", context_length=128, batch_size=8, grad_accum=1))

Run folder: `config.yaml` (resolved config), `metrics.jsonl`, `condensation.csv` +
`condensation.png`, `checkpoints/checkpoint-N/` (safetensors, optimiser, RNG states),
`final/` (model + tokenizer) and `manifest.json` (versions, commit, seed, wall time, peak
memory). Under `torchrun`/`accelerate launch` only the main process writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lmdisp.config import as_dict, build_with_extras
from lmdisp import locks, preempt
from lmdisp.errors import ConfigError, DataError, Interrupted, Terminated
from lmdisp.runs import RunDir, peak_memory, save_figure, write_json
from lmdisp.train.config import TrainConfig
from lmdisp.train.data_config import DataConfig
from lmdisp.train.machine import check_machine
from lmdisp.train import ranks
from lmdisp.train.callbacks import StopOnSigterm
from lmdisp.train.folder import (FINISHED, RESUME, check_output, final_losses, model_spec, prepare_run_dir,
                                 resume_point, stopped_message, train_labels)
from lmdisp.train.trainer import DispersionTrainer
from lmdisp.runfolder import MARKER, TrainingRun


@dataclass(frozen=True)
class Resolved:
    """What a run does, from its config and the machine: the manifest's `resolved` (cfg is never changed)."""

    model: str                      # the spec loaded (pre-training: random:<config>)
    start: str                      # new | resume | finished (`check_output`)
    world_size: int
    learning_rate: float            # after the world-size rule
    resume_from: str | None = None  # the checkpoint continued from


@dataclass
class TrainRun:
    path: Path
    final: Path
    steps: int
    metrics: list[dict]
    resolved: Resolved | None = None
    main_process: bool = True       # this process wrote the folder (rank 0 under accelerate/torchrun)
    already_finished: bool = False  # `--resume` of a finished run: nothing was done


def _use_cpu() -> bool:
    """No GPU: train on the CPU; under torchrun that is a gloo process group (MULTI_CPU)."""
    import torch

    return not torch.cuda.is_available()


COLLECTIVE_TIMEOUT_S = 1800  # transformers' ddp_timeout default; trainer_args: {ddp_timeout: N} changes it


def _dist_state(cfg: TrainConfig | None = None):
    """The process group, with the collective timeout set: a rank that waits longer than this
    on the others (one died without its socket closing) fails instead of hanging."""
    import datetime

    from accelerate import PartialState

    seconds = int((cfg.trainer_args if cfg else {}).get("ddp_timeout", COLLECTIVE_TIMEOUT_S))
    return PartialState(cpu=_use_cpu(), timeout=datetime.timedelta(seconds=seconds))


def build_data(cfg: TrainConfig, tokenizer, progress=None):
    """Training blocks and a fixed held-out batch for condensation tracking, read from the
    token shards of `cfg`'s corpus (built on first use; see `lmdisp.train.shards`). The first
    `condensation_sequences` blocks are held out, whatever the budget; the next
    train_tokens / context_length blocks are the training set."""
    shards, held, n_train = prepare_data(cfg, tokenizer, progress)
    train = shards.blocks(held, held + n_train)
    heldout = shards.blocks(0, held)[:] if held and cfg.condensation_every else None
    return train, heldout


def prepare_data(cfg, tokenizer, progress=None):
    """(shards, held-out blocks, training blocks) for a `DataConfig` (a TrainConfig is one)."""
    from lmdisp.train.shards import Packing, prepare_shards, resolve_source

    src = resolve_source(cfg.dataset, text_field=cfg.text_field, split=cfg.split, subset=cfg.subset)
    held, n_train = cfg.condensation_sequences, cfg.train_blocks()
    shards = prepare_shards(src, tokenizer, cfg.context_length, held + n_train, cache_dir=cfg.cache_dir,
                            progress=progress, num_proc=cfg.num_proc,
                            packing=Packing(cfg.packing, cfg.doc_tokens))
    n = shards.n_blocks
    if n < held + n_train:  # the whole corpus is shorter than the budget: epochs over it, if allowed
        held = min(held, n // 10)
        cfg.check_repeat(n, held)
        n_train = n - held
    if n_train < 1:
        raise DataError(f"dataset `{cfg.dataset}` gives {n} blocks of {cfg.context_length} tokens; "
                        "need at least one (lower --context-length or use more text)")
    return shards, held, n_train


def _check_positions(cfg: TrainConfig, model: str) -> None:
    from lmdisp.models import model_positions

    positions = model_positions(model, trust_remote_code=cfg.trust_remote_code)
    if positions and cfg.context_length > positions:
        raise ConfigError(f"--context-length {cfg.context_length} exceeds the {positions} positions of `{model}`")


def training_arguments(cfg: TrainConfig, run_dir: Path, max_steps: int, world_size: int):
    """The `TrainingArguments` of a run: lmdisp's fields, then `cfg.trainer_args` on top."""
    import torch
    from transformers import TrainingArguments

    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    micro, accum = cfg.batch_plan(world_size)
    kwargs = dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=cfg.scaled_lr(world_size),
        weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        **_schedule(cfg),
        max_steps=max_steps,
        logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.eval_interval(max_steps) or cfg.save_steps,
        save_total_limit=None if cfg.eval_points else (cfg.save_total_limit or None),
        seed=cfg.seed, data_seed=cfg.seed,
        bf16=precision == "bf16", fp16=precision == "fp16",
        activation_checkpointing=cfg.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=_use_cpu(),
        neftune_noise_alpha=cfg.noise_alpha if cfg.loss == "noisy-embedding" else None,
        report_to=[] if cfg.report_to == "none" else cfg.report_to.split(","),
        dataloader_drop_last=True,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
    )
    return build_with_extras(TrainingArguments, kwargs, cfg.trainer_args, "trainer_args")


def _schedule(cfg: TrainConfig) -> dict:
    """Warm-up (steps, else the ratio: a float < 1 is one for transformers) and cosine decay,
    to a floor of min_lr_ratio x the peak LR when that is > 0."""
    out = {"warmup_steps": cfg.warmup_steps or cfg.warmup_ratio, "lr_scheduler_type": "cosine"}
    if cfg.min_lr_ratio > 0:
        out.update(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio})
    return out


def _apply_lora(model, cfg: TrainConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("--lora needs the `peft` package: pip install peft") from None
    return get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                            target_modules="all-linear", task_type="CAUSAL_LM"))


def build_trainer(cfg: TrainConfig, tokenizer, train, args, callbacks: list, model: str | None = None):
    """Load the model (`model`, default `model_spec(cfg)`; and the teacher of a distill run) and
    wrap it in the run's trainer."""
    from transformers import default_data_collator
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lmdisp.models import load_model

    model = load_model(model or model_spec(cfg), dtype=cfg.dtype, device="cpu", lm_head=True, tokenizer=cfg.tokenizer,
                       trust_remote_code=cfg.trust_remote_code, seed=cfg.seed).model
    model.train()
    if cfg.lora:
        model = _apply_lora(model, cfg)
    kwargs = dict(model=model, args=args, train_dataset=train, data_collator=default_data_collator,
                  processing_class=tokenizer, callbacks=callbacks, run_config=cfg)
    if cfg.teacher:
        from lmdisp.train.distill import DistillTrainer

        teacher = load_model(cfg.teacher, dtype=cfg.dtype, device="cpu", lm_head=True,
                             trust_remote_code=cfg.trust_remote_code, seed=cfg.seed).model
        trainer = DistillTrainer(teacher=teacher, **kwargs)
    else:
        trainer = DispersionTrainer(**kwargs)
    from lmdisp.train.telemetry import tensorboard_dir

    tensorboard_dir(trainer, Path(args.output_dir).parent / "tensorboard")
    # Logs go to metrics.jsonl (and the CLI's bar): a library does not print the Trainer's dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def run_train(cfg: TrainConfig, command: str = "midtrain", callbacks: list | tuple = (),
              data_progress=None) -> TrainRun:
    """Validate, prepare data, load the model, train (or resume), save; return the run. `callbacks`
    are extra `TrainerCallback`s (the CLI's progress bar); `data_progress(report)` hears the token
    shards being built. `--resume` of a finished run does nothing (`already_finished`)."""
    started = time.time()
    model = model_spec(cfg)                   # pre-training: fresh weights from the named config
    state = _dist_state(cfg)
    check_machine(cfg.precision, state, command)  # a precision or sharding this machine cannot give
    world = state.num_processes
    max_steps = cfg.max_steps(world)          # refuses a budget below one step
    if (command == "distill") != bool(cfg.teacher):
        raise ConfigError("distill needs --teacher" if command == "distill" else "--teacher applies to distill only")
    start = check_output(cfg, command)        # before any data or weights load
    resolved = Resolved(model, start, world, cfg.scaled_lr(world))
    if start == FINISHED:
        run = TrainingRun(Path(cfg.output).expanduser())
        return TrainRun(run.path, run.final, int(run.manifest.get("steps", 0)), [], resolved, state.is_main_process,
                        already_finished=True)
    state.wait_for_everyone()                 # every rank checked before the main one makes the folder
    tokenizer = _check_models(cfg, model)
    if start == RESUME and state.is_main_process:
        locks.acquire(cfg.output, command)    # one writer: a second run into this folder is refused now
    try:
        train, heldout = build_data(cfg, tokenizer, data_progress)   # refuses an empty corpus, before the model loads
        run_dir, fresh = prepare_run_dir(cfg, command, state, start == RESUME)
        try:
            return _train(cfg, resolved, command, state, run_dir, fresh, tokenizer, train, heldout, max_steps,
                          callbacks, started)
        finally:
            if state.is_main_process:
                locks.release(run_dir)
    finally:
        if cfg.output and state.is_main_process:
            locks.release(cfg.output)


def _train(cfg, resolved, command, state, run_dir, fresh, tokenizer, train, heldout, max_steps, callbacks, started):
    try:
        trainer, resolved = _trainer(cfg, resolved, run_dir, state, tokenizer, train, heldout, max_steps, callbacks)
    except BaseException:
        if fresh and state.is_main_process:  # refused before its first step: leave no folder behind
            RunDir(run_dir, command).discard_if_empty(keep=("config.yaml", "manifest.json", MARKER))
        raise
    if state.is_main_process:
        locks.acquire(run_dir, command)       # re-entrant: held since the folder was made or checked
    stop = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StopOnSigterm))
    resume_cmd = f"lmdisp {command} --config {run_dir / 'config.yaml'} --output {run_dir} --resume"
    everyone = ranks.peers(state)
    try:
        with peak_memory() as mem, preempt.graceful():
            trainer.train(resume_from_checkpoint=resolved.resume_from)
    except Exception as exc:  # a rank died: say which, in one line, instead of the backend's traceback
        if everyone and ranks.is_collective_failure(exc):
            raise ranks.lost(everyone, state.process_index, exc, trainer.args.ddp_timeout,
                             Path(trainer.args.output_dir), resume_cmd) from None
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated keeps its exit code)
        stopped = type(exc) if isinstance(exc, Interrupted) else Interrupted
        raise stopped(stopped_message(command, run_dir, trainer.state.global_step), output=run_dir) from None
    finally:  # a failed run (NaN, Ctrl-C) must not leave the terminal inside a live progress bar
        for cb in trainer.callback_handler.callbacks:
            if hasattr(cb, "close"):
                cb.close()
    if stop.stopped_at is not None and trainer.state.global_step < max_steps:
        ckpt = Path(trainer.args.output_dir) / f"checkpoint-{stop.stopped_at}"
        raise Terminated(f"{command} stopped by SIGTERM at step {stop.stopped_at} of {max_steps}; checkpoint "
                         f"saved in {ckpt}; continue with: {resume_cmd}")
    final = _save_final(cfg, run_dir, state, trainer, tokenizer)
    if state.is_main_process:
        _finish(cfg, resolved, run_dir, started, mem, trainer, command)
    state.wait_for_everyone()
    return TrainRun(run_dir, final, trainer.state.global_step, list(trainer.state.log_history), resolved,
                    state.is_main_process)


def _check_models(cfg: TrainConfig, model: str):
    """Student (and teacher) before any weights load: causal LMs whose positions hold the context and
    whose embeddings cover the tokenizer, a teacher sharing the student's vocabulary. -> the tokenizer."""
    from lmdisp.models import check_causal_lm, check_model, check_vocabulary, default_tokenizer, load_tokenizer

    for spec in filter(None, (model, cfg.teacher)):
        check_model(spec, trust_remote_code=cfg.trust_remote_code)
        check_causal_lm(spec, trust_remote_code=cfg.trust_remote_code)
    _check_positions(cfg, model)
    tokenizer = load_tokenizer(cfg.tokenizer or default_tokenizer(model), trust_remote_code=cfg.trust_remote_code)
    for spec in filter(None, (model, cfg.teacher)):
        check_vocabulary(spec, tokenizer, trust_remote_code=cfg.trust_remote_code)
    if cfg.teacher:
        from lmdisp.train.distill import check_teacher

        check_teacher(cfg, model, tokenizer)
    return tokenizer


def _trainer(cfg, resolved: Resolved, run_dir, state, tokenizer, train, heldout, max_steps, callbacks):
    """The trainer (`build_trainer`) and the resolved record with the checkpoint to resume from."""
    import dataclasses

    args = training_arguments(cfg, run_dir, max_steps, resolved.world_size)
    resume = resume_point(run_dir, state, cfg.resume_from) if resolved.start == RESUME else None
    callbacks = [*_callbacks(cfg, run_dir, heldout, max_steps), StopOnSigterm(), *callbacks]
    trainer = build_trainer(cfg, tokenizer, train, args, callbacks, model=resolved.model)
    return trainer, dataclasses.replace(resolved, resume_from=resume)


def _save_final(cfg, run_dir: Path, state, trainer, tokenizer) -> Path:
    """`final/`: the model (LoRA merged; the adapter kept in `adapter/`) and tokenizer, with
    ordinary file permissions."""
    from lmdisp.runs import make_readable

    final = run_dir / "final"
    if cfg.lora:  # keep the adapter, and make `final` a plain model every command can load
        trainer.save_model(str(run_dir / "adapter"))
        if state.is_main_process:
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(final)
    else:
        trainer.save_model(str(final))           # main process only, safetensors
    if state.is_main_process:
        tokenizer.save_pretrained(final)
        for folder in (final, run_dir / "adapter"):
            if folder.is_dir():
                make_readable(folder)
    return final


def _callbacks(cfg: TrainConfig, run_dir: Path, heldout, max_steps: int) -> list:
    from lmdisp.train.callbacks import CondensationTracker, EvalHook, JsonlLogger
    from lmdisp.train.forgetting import ActiveForgetting

    callbacks = [JsonlLogger(run_dir / "metrics.jsonl")]
    if heldout is not None:
        callbacks.append(CondensationTracker(run_dir / "condensation.csv", heldout, cfg.condensation_every,
                                             metrics=run_dir / "metrics.jsonl"))
    if cfg.loss == "active-forgetting":
        callbacks.append(ActiveForgetting(cfg.forget_every, cfg.seed))
    if cfg.eval_every or cfg.eval_tasks:
        every = cfg.eval_every or cfg.eval_interval(max_steps)  # the authors' floor(T/K)+1 with eval_points
        callbacks.append(EvalHook(every, cfg.eval_tasks, run_dir, labels=train_labels(cfg),
                                  include_path=cfg.eval_include_path, limit=cfg.eval_limit))
    return callbacks


def _finish(cfg: TrainConfig, resolved: Resolved, run_dir: Path, started: float, mem: dict, trainer,
            command: str) -> None:
    import dataclasses

    import pandas as pd

    trace = run_dir / "condensation.csv"
    if trace.is_file():
        from lmdisp.plots import condensation_trace

        save_figure(condensation_trace(pd.read_csv(trace), title=f"{resolved.model} · {cfg.loss}"),
                    run_dir / "condensation.png")
    world, data = trainer.args.world_size, trainer.train_dataset
    extra = {"steps": trainer.state.global_step, **cfg.batch_record(world),
             **final_losses(run_dir / "metrics.jsonl"), "memory": mem,
             "data": {"token_file": str(data.path), "first_block": data.start, "train_blocks": len(data),
                      "context_length": data.context_length},
             "wall_time_s": round(time.time() - started, 3)}
    rd = RunDir(run_dir, command, started=started)
    rd.write_manifest(as_dict(cfg), seed=cfg.seed, status="finished", labels=train_labels(cfg),
                      resolved=dataclasses.asdict(resolved), **{k: v for k, v in extra.items() if k != "wall_time_s"})
    write_json(run_dir / "train_summary.json", extra)


def run_prepare(cfg: DataConfig, progress=None) -> dict:
    """Build (or find) the token shards a training run with `cfg` will read; a summary."""
    from lmdisp.models import default_tokenizer, load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer or default_tokenizer(_tokenizer_model(cfg.model)),
                               trust_remote_code=cfg.trust_remote_code)
    started = time.time()
    shards, held, n_train = prepare_data(cfg, tokenizer, progress)
    size = (shards.path / "tokens.bin").stat().st_size
    return {"path": str(shards.path), "built": shards.built, "seconds": round(time.time() - started, 3),
            "blocks": shards.n_blocks, "held_out": held, "train_blocks": n_train,
            "context_length": cfg.context_length, "dtype": shards.index["dtype"], "bytes": size,
            "bytes_per_token": size / (shards.n_blocks * cfg.context_length), "exhausted": shards.exhausted}


def _tokenizer_model(model: str) -> str:
    """`pretrain` reads a model config name (configs/models/<name>.json) as `random:<name>`."""
    from lmdisp.config import packaged

    if not model.startswith("random:") and (model.endswith(".json") or Path(str(packaged("models", f"{model}.json"))).is_file()):
        return f"random:{model}"
    return model
