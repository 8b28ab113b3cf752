"""Checkpoints that are whole or not used: sizes and checksums recorded when written
(`lmdisp.integrity`), a save that fails for lack of space removed, a damaged checkpoint moved
aside when a run resumes (the one before it is used) or refused when named."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("lmdisp")


def checkpoint_bytes(model, optimizer=None) -> int:
    """About what a checkpoint takes: the weights plus the optimiser's state tensors."""
    import torch

    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if optimizer is not None:
        for state in optimizer.state.values():
            size += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return size


def save_checkpoint(trainer, save):
    """Run the Trainer's `save()` of checkpoint-<step>, then record its files (main process,
    once every process has written its part). Lack of space: the partial checkpoint is
    removed and `DiskFull` names it, what it needed and the last complete checkpoint."""
    from lmdisp import integrity
    from lmdisp.runs import make_readable
    from lmdisp.space import is_no_space, no_space

    folder = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
    try:
        out = save()
    except OSError as exc:
        if not is_no_space(exc):
            raise
        if trainer.args.should_save:
            shutil.rmtree(folder, ignore_errors=True)
        last = latest_complete(folder.parent)
        raise no_space(exc, folder, checkpoint_bytes(trainer.model, trainer.optimizer),
                       then=f"the last complete checkpoint is {last.name if last else 'none'}; free space and "
                            "continue with --resume") from None
    if trainer.args.world_size > 1:
        trainer.accelerator.wait_for_everyone()  # every rank's RNG state is on disk
    if trainer.args.should_save:  # safetensors leaves its files private (0600): make them ordinary files
        make_readable(trainer.args.output_dir)
        integrity.record(folder)
    return out


def latest_complete(folder: Path) -> Path | None:
    import re

    ckpts = [p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name)] if folder.is_dir() else []
    for ckpt in sorted(ckpts, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        if (ckpt / "trainer_state.json").is_file():
            return ckpt
    return None


def problem(ckpt: Path) -> str | None:
    """What makes `ckpt` unusable: no readable trainer_state.json (a save cut short; the Trainer
    writes it last), or files that differ from those recorded when it was written."""
    import json

    from lmdisp import integrity

    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "its save was cut short (no trainer_state.json)"
    return integrity.verify(ckpt)
