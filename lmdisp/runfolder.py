"""What a training run folder is, in one place (midtrain, pretrain and distill write one; models,
evaluation, checkpoints and resume read it).

    <run>/training_run.json         the marker: this folder is an lmdisp training run
    <run>/config.yaml               the resolved TrainConfig (`--config` replays it)
    <run>/manifest.json             status (running | finished), steps, labels, resolved values
    <run>/checkpoints/checkpoint-N  the Trainer's checkpoints (complete once trainer_state.json is)
    <run>/final/                    the final model and tokenizer: the folder that is "the model"

A run folder is a model everywhere a model is accepted: `model_folder` maps it to `final/`.
Run folders written before the marker existed are recognised by their config.yaml holding a
training config (`model` and `loss` keys); that fallback lives in `TrainingRun.at` alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmdisp.errors import ModelLoadError

MARKER = "training_run.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class TrainingRun:
    """A training run folder (see the module docstring)."""

    path: Path

    @classmethod
    def at(cls, folder: Path | str) -> "TrainingRun | None":
        """The run whose folder is `folder`, or None."""
        folder = Path(folder).expanduser()
        if (folder / MARKER).is_file():
            return cls(folder)
        if (folder / "config.yaml").is_file():  # a run written before the marker existed
            from lmdisp.config import read_yaml
            from lmdisp.errors import LmdispError

            try:
                data = read_yaml(folder / "config.yaml")
            except LmdispError:
                return None
            if isinstance(data, dict) and "model" in data and "loss" in data:
                return cls(folder)
        return None

    @classmethod
    def containing(cls, path: Path | str) -> "TrainingRun | None":
        """The run a folder belongs to: `<run>`, `<run>/final`, `<run>/checkpoints/checkpoint-N`
        or `<run>/evals/step-N` (the nearest of it and its two parents that is a run)."""
        path = Path(path).expanduser()
        for folder in (path, path.parent, path.parent.parent):
            if (run := cls.at(folder)) is not None:
                return run
        return None

    @staticmethod
    def mark(folder: Path, command: str) -> None:
        """Write the marker (the training commands do, when they make the folder)."""
        from lmdisp.runs import write_json

        write_json(Path(folder) / MARKER, {"lmdisp": "training run", "format": 1, "command": command})

    @property
    def config(self) -> dict:
        from lmdisp.config import read_yaml

        return read_yaml(self.path / "config.yaml")

    @property
    def manifest(self) -> dict:
        try:
            data = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def start_model(self) -> str:
        """The model spec the run started from (its step 0): `model_spec` of its config."""
        return model_spec(self.config)

    @property
    def labels(self) -> dict:
        """The report labels (base model, method, seed) the run wrote into its manifest."""
        return self.manifest.get("labels") or {}

    @property
    def finished(self) -> bool:
        return self.manifest.get("status") == "finished"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def has_final(self) -> bool:
        return (self.final / "config.json").is_file()

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_folders(self) -> list[tuple[int, Path]]:
        """(step, folder) of every `checkpoints/checkpoint-N`, complete or not, oldest first."""
        folder = self.checkpoint_dir
        found = [(int(m.group(1)), c) for c in (folder.iterdir() if folder.is_dir() else [])
                 if (m := _CHECKPOINT.fullmatch(c.name)) and c.is_dir()]
        return sorted(found)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of the complete checkpoints (the Trainer writes trainer_state.json
        last, so one without a readable one was cut short by a kill), oldest first."""
        return [(step, c) for step, c in self.checkpoint_folders() if is_complete(c)]

    def model_folder(self) -> Path:
        """`final/`, or one line saying why there is none yet."""
        if not self.has_final:
            raise ModelLoadError(f"{self.path} is a training run without a final/ model (still running or stopped "
                                 "early?); pass one of its checkpoints/checkpoint-N folders, or --resume the run")
        return self.final


def model_spec(config: dict) -> str:
    """The model a training config loads: pre-training (`init: scratch`) reads `model` as a
    config name and starts from fresh weights, `random:<model>`. The config is never rewritten."""
    model = str(config.get("model"))
    return f"random:{model}" if config.get("init") == "scratch" and not model.startswith("random:") else model


def is_complete(checkpoint: Path) -> bool:
    try:
        json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def model_folder(path: Path) -> Path:
    """The model folder a folder spec stands for: a training run's `final/`, anything else itself.
    The one place a run folder becomes a model (weights, tokenizer, evaluation, teacher)."""
    if (path / "config.json").is_file():
        return path
    run = TrainingRun.at(path)
    return run.model_folder() if run is not None else path
