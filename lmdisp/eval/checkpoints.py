"""`lmdisp evaluate RUN --checkpoints all`: score the starting model and every kept checkpoint
of a training run.

The authors report, per seed, the best of their periodic evaluations (every floor(T/5)+1
steps and at the end) and, in their GPT-2 runs, of the one at the start (`--eval_at_begin`;
docs/fidelity.md E6). The paper's table configs keep exactly those checkpoints
(`eval_points: 5`); this module evaluates the starting model (the run's `model`, step 0) and
each checkpoint afterwards, through `run_evaluate` with the run's seed and report labels,
into `<output>/step-N`, so `lmdisp report --select final|best|best-trained` can choose among
them. That also covers FSDP runs, which cannot evaluate during training.
"""

from __future__ import annotations

import re
from pathlib import Path

from lmdisp.config import require
from lmdisp.errors import Interrupted
from lmdisp.eval.config import EvaluateConfig
from lmdisp.eval.harness import Stage, check_task_names, run_evaluate, task_manager
from lmdisp.eval.progress import RequestProgress
from lmdisp.eval.results import EvaluateRun
from lmdisp.runs import LOCK_NAME, LOG_FILE, RunDir, read_training_run, training_run_of


def saved_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of a training run's complete checkpoints (trainer_state.json is written
    last), oldest first."""
    folder = run / "checkpoints"
    found = [(int(m.group(1)), c) for c in (folder.iterdir() if folder.is_dir() else [])
             if (m := re.fullmatch(r"checkpoint-(\d+)", c.name)) and (c / "trainer_state.json").is_file()]
    return sorted(found)


class CheckpointRuns(list):
    """The evaluations made by `run_evaluate_checkpoints` (a list of `EvaluateRun`), with the
    folder they are in and the steps that were already evaluated there (skipped)."""

    def __init__(self, runs=(), path: Path | None = None, skipped: list[int] | None = None):
        super().__init__(runs)
        self.path, self.skipped = path, list(skipped or [])


def run_evaluate_checkpoints(cfg: EvaluateConfig, stage: Stage | None = None,
                             progress: RequestProgress | None = None) -> CheckpointRuns:
    """`--checkpoints all`: evaluate every saved checkpoint of the training run `cfg.model`,
    one run folder `<output>/step-N` each, labelled with its training step. Steps whose folder
    already holds `tasks.csv` are skipped, so an interrupted call continues where it stopped."""
    import dataclasses

    path = Path(cfg.model).expanduser()
    run = training_run_of(path) if path.is_dir() else None
    require(run is not None and run == path,
            f"--checkpoints {cfg.checkpoints}: {cfg.model} is not a training run folder (midtrain/pretrain/distill)")
    ckpts = saved_checkpoints(run)
    require(bool(ckpts), f"--checkpoints {cfg.checkpoints}: {cfg.model} has no saved checkpoint in checkpoints/ "
            "(train with --set eval_points=5, or save_steps and save_total_limit=0, to keep them)")
    plan = [(step, dataclasses.replace(cfg, model=str(folder), checkpoints="final")) for step, folder in ckpts]
    if cfg.checkpoints == "all":
        plan.insert(0, (0, starting_model(run, cfg)))
    check_task_names(task_manager(cfg.include_path, list(cfg.tasks)), list(cfg.tasks), cfg.include_path)
    out = Path(cfg.output) if cfg.output else None
    if out is None or not (out.is_dir() and all(re.fullmatch(r"step-\d+", c.name) or c.name in (LOG_FILE, LOCK_NAME)
                                                for c in out.iterdir())):
        out = RunDir.create("evaluate", path.name, root=cfg.results_dir, output=cfg.output).path
    else:
        RunDir.resume(out, "evaluate")  # continuing: refused while another process writes there
    runs = CheckpointRuns(path=out)
    try:
        for step, one in plan:
            target = out / f"step-{step}"
            if (target / "tasks.csv").is_file():
                runs.skipped.append(step)
                continue
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            if stage:
                stage(f"checkpoint at step {step}")
            runs.append(run_evaluate(dataclasses.replace(one, output=str(target)), stage, training_step=step,
                                     progress=progress))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated keeps its exit code)
        RunDir(out, "evaluate").discard_if_empty()
        stopped = type(exc) if isinstance(exc, Interrupted) else Interrupted
        done = f"{len(runs) + len(runs.skipped)} of {len(plan)} checkpoints are evaluated in {out}"
        raise stopped(f"evaluation stopped; {done}", output=out,
                      hint=f"the same command with --output {out} continues with the others") from None
    except BaseException:
        RunDir(out, "evaluate").discard_if_empty()  # nothing written: leave no empty folder behind
        raise
    RunDir(out, "evaluate").release()
    return runs


def starting_model(run: Path, cfg: EvaluateConfig) -> EvaluateConfig:
    """The evaluation of a run's step 0: the model it started from (its config's `model`, a
    `random:` spec for pre-training, rebuilt with the run's seed), with the run's report labels
    and seed, so the report sees it as one more checkpoint of the run (docs/fidelity.md E6)."""
    import dataclasses

    config, labels = read_training_run(run)
    seed = cfg.seed if cfg.seed is not None else int(config.get("seed", 1))
    return dataclasses.replace(cfg, model=str(config["model"]), checkpoints="final", seed=seed,
                               tokenizer=cfg.tokenizer or config.get("tokenizer"),
                               base_model=cfg.base_model or labels.get("base_model") or config["model"],
                               method=cfg.method or labels.get("method") or config.get("loss"))
