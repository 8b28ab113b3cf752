"""`run_posttrain`: one SFT, DPO or GRPO run (TRL) from a `PostTrainConfig` to a run folder.

    from lmdisp.train.posttrain_config import PostTrainConfig
    from lmdisp.train.posttrain_run import run_posttrain
    run_posttrain(PostTrainConfig(objective="sft", dataset="chat.jsonl", loss="dispersion"))

The run folder is midtrain's: config.yaml, metrics.jsonl, condensation.csv/.png (the same
held-out blocks at every snapshot), checkpoints/, final/ (model + tokenizer: `lmdisp evaluate
RUN` and `lmdisp measure RUN/final` read it), manifest.json; the same `--resume` rules.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lmdisp import locks, preempt
from lmdisp.config import as_dict, build_with_extras
from lmdisp.errors import ConfigError, DataError, Interrupted, Terminated
from lmdisp.runs import RunDir, make_readable, peak_memory, save_figure, write_json
from lmdisp.train.callbacks import StopOnSigterm
from lmdisp.train.folder import (FINISHED, RESUME, check_output, final_losses, prepare_run_dir, resume_point,
                                 stopped_message,
                                 train_labels)
from lmdisp.train.posttrain_config import PostTrainConfig
from lmdisp.train.run import TrainRun, _dist_state, _use_cpu
from lmdisp.runfolder import MARKER, TrainingRun

COLUMNS = {"sft": (("messages",), ("prompt", "completion"), ("text",)), "dpo": (("prompt", "chosen", "rejected"),),
           "grpo": (("prompt",),)}


def trl_classes(objective: str):
    """(trainer class, config class) of TRL for `objective`; ConfigError without TRL."""
    try:
        import trl
    except ImportError:
        raise ConfigError(f"lmdisp {objective} needs TRL: pip install 'lmdisp[trl]' (make install has it)") from None
    return {"sft": (trl.SFTTrainer, trl.SFTConfig), "dpo": (trl.DPOTrainer, trl.DPOConfig),
            "grpo": (trl.GRPOTrainer, trl.GRPOConfig)}[objective]


def load_posttrain_data(cfg: PostTrainConfig):
    """The training rows (a `datasets.Dataset`) with the columns the objective needs."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(cfg.dataset).expanduser()
    try:
        if path.exists():
            files = sorted(str(p) for p in path.glob("*.json*")) if path.is_dir() else [str(path)]
            data = datasets.load_dataset("json", data_files=files, split="train")
        else:
            data = datasets.load_dataset(cfg.dataset, split=cfg.split)
    except Exception as exc:  # datasets raises many types
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read dataset `{cfg.dataset}`: {line[:300]}") from None
    options = COLUMNS[cfg.objective]
    if not any(set(cols) <= set(data.column_names) for cols in options):
        want = " or ".join("+".join(c) for c in options)
        raise DataError(f"dataset `{cfg.dataset}` has columns {', '.join(data.column_names)}; {cfg.objective} "
                        f"needs {want}")
    return data


def trl_arguments(cfg: PostTrainConfig, run_dir: Path, config_class):
    """TRL's SFTConfig / DPOConfig / GRPOConfig: lmdisp's fields, then `trl_args`."""
    import torch

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available()
                                       and torch.cuda.is_bf16_supported())
    kwargs = dict(output_dir=str(run_dir / "checkpoints"), max_steps=cfg.max_steps,
                  per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                  learning_rate=cfg.lr, logging_steps=cfg.logging_steps, logging_first_step=True,
                  save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit or None,
                  seed=cfg.seed, data_seed=cfg.seed, bf16=bf16, use_cpu=_use_cpu(),
                  report_to=[] if cfg.report_to == "none" else cfg.report_to.split(","), disable_tqdm=True,
                  dataloader_pin_memory=torch.cuda.is_available())
    names = {f.name for f in dataclasses.fields(config_class)}
    kwargs["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = \
        cfg.gradient_checkpointing
    if cfg.objective in ("sft", "dpo"):
        kwargs["max_length"] = cfg.max_length
    if cfg.objective == "grpo":
        kwargs.update(num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                      temperature=cfg.temperature)
    if cfg.beta is not None and cfg.objective != "sft":
        kwargs["beta"] = cfg.beta
    return build_with_extras(config_class, kwargs, cfg.trl_args, "trl_args")


def heldout_batch(cfg: PostTrainConfig, tokenizer):
    """The fixed held-out blocks the condensation snapshots measure (the same for every run
    of the same corpus, tokenizer and length)."""
    if not (cfg.condensation_every and cfg.condensation_sequences):
        return None
    from lmdisp.train.shards import prepare_shards, resolve_source

    shards = prepare_shards(resolve_source(cfg.heldout), tokenizer, cfg.heldout_length, cfg.condensation_sequences)
    return shards.blocks(0, min(cfg.condensation_sequences, shards.n_blocks))[:]


def load_posttrain_model(cfg: PostTrainConfig):
    from lmdisp.models import check_causal_lm, check_model, load_model

    check_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    check_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)
    return load_model(cfg.model, dtype="float32", device="cpu", lm_head=True, tokenizer=cfg.tokenizer,
                      trust_remote_code=cfg.trust_remote_code, seed=cfg.seed).model


def posttrain_tokenizer(cfg: PostTrainConfig):
    """The model's tokenizer with a padding token (its EOS when it has none)."""
    from lmdisp.models import default_tokenizer, load_tokenizer

    tok = load_tokenizer(cfg.tokenizer or default_tokenizer(cfg.model), trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_posttrainer(cfg: PostTrainConfig, run_dir: Path, tokenizer, data, callbacks: list):
    """TRL's trainer for the objective with `RegularizerMixin`, lmdisp's callbacks attached."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lmdisp.train.posttrain import Regularizer, with_regularizer
    from lmdisp.train.telemetry import tensorboard_dir

    trainer_class, config_class = trl_classes(cfg.objective)
    args = trl_arguments(cfg, run_dir, config_class)
    reg = None if not cfg.has_regularizer else Regularizer(
        cfg.loss, cfg.lambda_disp, tau=cfg.tau, clamp=cfg.clamp, location=cfg.location,
        max_tokens=cfg.max_tokens, tokens=cfg.reg_tokens, seed=cfg.seed)
    kwargs = dict(model=load_posttrain_model(cfg), args=args, train_dataset=data, processing_class=tokenizer,
                  callbacks=callbacks, regularizer=reg)
    if cfg.objective == "grpo":
        from lmdisp.train.rewards import reward_functions

        kwargs["reward_funcs"] = reward_functions(cfg.reward)
    if cfg.objective == "dpo":
        kwargs["ref_model"] = load_posttrain_model(cfg)
    try:
        trainer = with_regularizer(trainer_class)(**kwargs)
    except ValueError as exc:  # TRL's checks of data and settings (chat template, batch sizes, ...)
        raise ConfigError(f"{cfg.objective}: {(str(exc).strip().splitlines() or ['invalid settings'])[0]}") from None
    tensorboard_dir(trainer, run_dir / "tensorboard")
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _callbacks(cfg: PostTrainConfig, run_dir: Path, heldout) -> list:
    from lmdisp.train.callbacks import CondensationTracker, JsonlLogger

    out = [JsonlLogger(run_dir / "metrics.jsonl")]
    if heldout is not None:
        out.append(CondensationTracker(run_dir / "condensation.csv", heldout, cfg.condensation_every,
                                       metrics=run_dir / "metrics.jsonl"))
    return out


def run_posttrain(cfg: PostTrainConfig, callbacks: list | tuple = ()) -> TrainRun:
    """Validate, load data and model, train (or resume) with TRL, save; return the run. One
    writer per run folder and SIGTERM handling as `run_train`."""
    started, command = time.time(), cfg.objective
    state = _dist_state()
    trl_classes(command)
    start = check_output(cfg, command)
    if start == FINISHED:  # --resume of a finished run: nothing to do
        run = TrainingRun(Path(cfg.output).expanduser())
        return TrainRun(run.path, run.final, int(run.manifest.get("steps", 0)), [], main_process=state.is_main_process,
                        already_finished=True)
    resuming = start == RESUME
    state.wait_for_everyone()
    tokenizer = posttrain_tokenizer(cfg)
    if resuming and state.is_main_process:
        locks.acquire(cfg.output, command)
    try:
        data = load_posttrain_data(cfg)
        heldout = heldout_batch(cfg, tokenizer)
        run_dir, fresh = prepare_run_dir(cfg, command, state, resuming)
        try:
            return _train(cfg, state, run_dir, fresh, resuming, tokenizer, data, heldout, callbacks, started)
        finally:
            if state.is_main_process:
                locks.release(run_dir)
    finally:
        if cfg.output and state.is_main_process:
            locks.release(cfg.output)


def _train(cfg, state, run_dir, fresh, resuming, tokenizer, data, heldout, callbacks, started) -> TrainRun:
    command = cfg.objective
    try:
        resume = resume_point(run_dir, state, cfg.resume_from) if resuming else None
        stop = StopOnSigterm()
        trainer = build_posttrainer(cfg, run_dir, tokenizer, data,
                                    [*_callbacks(cfg, run_dir, heldout), stop, *callbacks])
    except BaseException:
        if fresh and state.is_main_process:
            RunDir(run_dir, command).discard_if_empty(keep=("config.yaml", "manifest.json", MARKER))
        raise
    if state.is_main_process:
        locks.acquire(run_dir, command)
    resume_cmd = f"lmdisp {command} --config {run_dir / 'config.yaml'} --output {run_dir} --resume"
    try:
        with peak_memory() as mem, preempt.graceful():
            trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated keeps its exit code)
        stopped = type(exc) if isinstance(exc, Interrupted) else Interrupted
        raise stopped(stopped_message(command, run_dir, trainer.state.global_step), output=run_dir) from None
    finally:
        for cb in trainer.callback_handler.callbacks:
            if hasattr(cb, "close"):
                cb.close()
    if stop.stopped_at is not None and trainer.state.global_step < cfg.max_steps:
        ckpt = Path(trainer.args.output_dir) / f"checkpoint-{stop.stopped_at}"
        raise Terminated(f"{command} stopped by SIGTERM at step {stop.stopped_at} of {cfg.max_steps}; checkpoint "
                         f"saved in {ckpt}; continue with: {resume_cmd}")
    final = run_dir / "final"
    trainer.save_model(str(final))
    if state.is_main_process:
        tokenizer.save_pretrained(final)
        make_readable(final)
        _finish(cfg, run_dir, started, mem, trainer)
    state.wait_for_everyone()
    return TrainRun(run_dir, final, trainer.state.global_step, list(trainer.state.log_history),
                    main_process=state.is_main_process)


def _finish(cfg: PostTrainConfig, run_dir: Path, started: float, mem: dict, trainer) -> None:
    import pandas as pd

    trace = run_dir / "condensation.csv"
    if trace.is_file():
        from lmdisp.plots import condensation_trace

        save_figure(condensation_trace(pd.read_csv(trace), title=f"{cfg.model} · {cfg.method_label()}"),
                    run_dir / "condensation.png")
    extra = {"steps": trainer.state.global_step, "world_size": trainer.args.world_size,
             "learning_rate": trainer.args.learning_rate, "objective": cfg.objective,
             **final_losses(run_dir / "metrics.jsonl"), "memory": mem, "wall_time_s": round(time.time() - started, 3)}
    RunDir(run_dir, cfg.objective, started=started).write_manifest(
        as_dict(cfg), seed=cfg.seed, status="finished", labels=train_labels(cfg),
        **{k: v for k, v in extra.items() if k != "wall_time_s"})
    write_json(run_dir / "train_summary.json", extra)
