"""What a training run folder holds and how a run continues: checking `--output` before any
work (a new run, a run to `--resume`, a finished run, another config), making the folder with
its config.yaml and a `running` manifest, picking the checkpoint to resume from (a complete
one: the Trainer writes `trainer_state.json` last), and reading the final losses back.
"""

from __future__ import annotations

import time
from pathlib import Path

from lmdisp.config import as_dict
from lmdisp.errors import RunDirError
from lmdisp.runs import RunDir, ensure_writable
from lmdisp.train.config import TrainConfig

# Fields that may differ when the same run folder is continued.
_RESUME_FREE = {"resume", "resume_from", "output", "results_dir", "num_proc", "report_to", "cache_dir"}


def check_output(cfg: TrainConfig, command: str) -> bool:
    """Before any data or weights load: is `--output` a run to continue (True), or may a new
    run folder be made (False)? Refuses a folder of another config, a finished run, and any
    folder that cannot be written. `--resume` with nothing to resume starts the run and says
    so (litgpt's `--resume auto`), so that one command both starts and continues a run."""
    import json

    import yaml

    out = Path(cfg.output).expanduser() if cfg.output else None
    if out is None or not (out / "config.yaml").is_file():
        if cfg.resume_from:
            raise RunDirError(f"--set resume_from={cfg.resume_from}: there is no run in {out} to resume")
        RunDir.check(command, root=cfg.results_dir, output=out)
        if cfg.resume:
            import logging

            logging.getLogger("lmdisp").warning("--resume: nothing to resume in %s yet: starting a new run there",
                                                out if out is not None else cfg.results_dir)
            cfg.resume = False
        return False
    RunDir.check_free(out)  # another process writing this run: refused first, naming it
    try:
        old = yaml.safe_load((out / "config.yaml").read_text()) or {}
        manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunDirError(f"{out}: cannot read its config.yaml/manifest.json ({_first_line(exc)}); use a new "
                          "--output") from None
    new = as_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise RunDirError(f"{out} holds a run with a different config ({shown}); use a new --output")
    if manifest.get("status") == "finished":
        done = f"{out} is a finished run ({manifest.get('steps', '?')} steps, final model in {out / 'final'})"
        raise RunDirError(f"{done}; nothing to resume, nothing changed" if cfg.resume else
                          f"{done}; choose a new --output for a new run")
    if not cfg.resume:
        raise RunDirError(f"{out} already holds this run; pass --resume to continue it, or choose a new --output")
    if cfg.resume_from:
        chosen_checkpoint(out, cfg.resume_from)
    ensure_writable(out)
    return True


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def prepare_run_dir(cfg: TrainConfig, command: str, state, resuming: bool) -> tuple[Path, bool]:
    """Create (main process) or agree on (all processes) the run folder -> (path, fresh)."""
    path = None
    if state.is_main_process:
        if resuming:
            path = RunDir(Path(cfg.output).expanduser(), command).announce().path
        else:
            name = f"{Path(cfg.model).name or cfg.model}-{cfg.loss}-seed{cfg.seed}"
            path = RunDir.create(command, name, root=cfg.results_dir, output=cfg.output).path
            RunDir(path, command).write_manifest(as_dict(cfg), seed=cfg.seed, status="running",
                                                 labels=train_labels(cfg), **cfg.batch_record(state.num_processes))
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        path = broadcast_object_list([path])[0]
    return Path(path), not resuming


def train_labels(cfg: TrainConfig) -> dict:
    """The report labels of a training run (read by `lmdisp evaluate` from its manifest)."""
    return {"base_model": cfg.base_label(), "method": cfg.method_label(), "seed": cfg.seed}


def resume_point(run_dir: Path, state, chosen: str | None = None) -> str | None:
    """The checkpoint to resume from: `chosen` (a `checkpoint-N` of this run, or a path to
    one), else the newest usable one. The Trainer writes `trainer_state.json` last, so a
    checkpoint without a readable one was cut short by a kill: the main process moves it
    aside (`.incomplete-checkpoint-N`) and the run resumes from the one before; so does a
    checkpoint whose files differ from the sizes and checksums recorded when it was written
    (`.damaged-checkpoint-N`, with a warning). None (with a notice) when the run has no
    checkpoint yet: it starts again from step 0."""
    import logging
    import re

    from lmdisp.train.checkpoints import problem

    folder = run_dir / "checkpoints"
    if chosen:
        return str(chosen_checkpoint(run_dir, chosen))
    found = None
    if folder.is_dir():
        ckpts = [p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
        for ckpt in sorted(ckpts, key=lambda p: int(p.name.split("-")[1]), reverse=True):
            wrong = problem(ckpt)
            if wrong is None:
                found = str(ckpt)
                break
            if state.is_main_process:
                cut = "trainer_state.json" in wrong
                ckpt.rename(ckpt.with_name(f".{'incomplete' if cut else 'damaged'}-{ckpt.name}-{int(time.time())}"))
                if not cut:
                    logging.getLogger("lmdisp").warning("%s is damaged (%s): moved aside, resuming from the "
                                                        "checkpoint before it", ckpt, wrong)
    state.wait_for_everyone()
    if found is None and state.is_main_process:
        logging.getLogger("lmdisp").warning("%s has no complete checkpoint yet: starting it again from step 0",
                                            run_dir)
    elif state.is_main_process:
        logging.getLogger("lmdisp").warning("--resume: continuing %s from step %s (%s)", run_dir,
                                            Path(found).name.split("-")[1], found)
    return found


def last_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint of a run (`trainer_state.json` is
    written last), or None; reads only."""
    import re

    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), c) for c in (folder.iterdir() if folder.is_dir() else [])
             if (m := re.fullmatch(r"checkpoint-(\d+)", c.name)) and (c / "trainer_state.json").is_file()]
    return max(found, default=None)


def stopped_message(command: str, run_dir: Path, step: int) -> str:
    """After Ctrl-C: the step reached, the checkpoint --resume continues from, and the command."""
    last = last_checkpoint(run_dir)
    if last is None:
        kept = "no checkpoint was saved yet, so --resume starts it again from step 0"
    elif last[0] >= step:
        kept = f"its last checkpoint is that step ({last[1]})"
    else:
        again = f"step {step}" if step == last[0] + 1 else f"steps {last[0] + 1}-{step}"
        kept = f"its last checkpoint is step {last[0]} ({last[1]}): --resume continues from there ({again} again)"
    return (f"{command} stopped at step {step}; {kept}; continue with: lmdisp {command} --config "
            f"{run_dir / 'config.yaml'} --output {run_dir} --resume")


def final_losses(metrics: Path) -> dict:
    """The last logged training loss (the mean CE of the last logging interval) and the last
    held-out loss and perplexity, from `metrics.jsonl`."""
    import json

    out: dict = {}
    if not metrics.is_file():
        return out
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "ce" in record:
            out.update(train_loss=record["ce"], train_loss_step=record["step"])
        if "heldout_loss" in record:
            out.update(heldout_loss=record["heldout_loss"], heldout_perplexity=record["heldout_perplexity"],
                       heldout_step=record["step"])
    return out


def chosen_checkpoint(run_dir: Path, chosen: str) -> Path:
    """`resume_from`: a `checkpoint-N` of the run, or a path to one; it must be complete and
    match the sizes and checksums recorded when it was written."""
    from lmdisp.train.checkpoints import problem

    folder = run_dir / "checkpoints"
    ckpt = Path(chosen).expanduser() if Path(chosen).expanduser().is_dir() else folder / chosen
    if not (ckpt / "trainer_state.json").is_file():
        have = sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []
        raise RunDirError(f"--set resume_from={chosen}: not a complete checkpoint of {run_dir} (it has "
                          f"{', '.join(have) or 'none'})")
    wrong = problem(ckpt)
    if wrong:
        raise RunDirError(f"--set resume_from={chosen}: {ckpt} is damaged ({wrong}); choose another checkpoint")
    return ckpt
