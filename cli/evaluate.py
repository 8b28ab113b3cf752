"""`lmdisp evaluate`: parse options, call `lmdisp.evaluation.run_evaluate`, print the table.

    lmdisp evaluate --tasks arc_easy,mmlu                        # the bundled SmolLM2-135M
    lmdisp evaluate --model results/midtrain/<run> --preset paper
    lmdisp evaluate --model gpt2 --preset paper --tasks arc_easy,piqa --limit 100 --seed 2
    lmdisp evaluate --tasks my_task --include-path my_tasks/     # your own YAML + local data, offline
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.ui import console


def evaluate(
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Hub id, local folder, .gguf, alias, random:<config>, or a midtrain/pretrain/"
                                    "distill run folder (its final/ model). Default: the bundled smollm2-135m."),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="Comma-separated lm-eval task names; with "
                                                                    "--preset, a subset of its tasks."),
    preset: Optional[str] = typer.Option(None, help="`paper` (configs/eval/paper.yaml: 10 tasks, paper protocol) "
                                                    "or an eval YAML of EvaluateConfig fields."),
    num_fewshot: Optional[int] = typer.Option(None, help="Shots for every task (default: the preset's per-task "
                                                         "value, else the task's own)."),
    limit: Optional[float] = typer.Option(None, help="Examples per task (per subtask of a group); < 1: a fraction."),
    batch_size: Optional[str] = typer.Option(None, help="An integer or auto (default: auto on a GPU, 8 on a CPU)."),
    seed: Optional[int] = typer.Option(None, help="Random, numpy, torch and few-shot seed (default: the training "
                                                  "run's seed, else 1)."),
    gen_kwargs: Optional[str] = typer.Option(None, help="Generation settings for generative tasks, e.g. "
                                                        "do_sample=False,max_gen_toks=256."),
    include_path: Optional[Path] = typer.Option(None, help="Folder of your own task YAMLs (local data files: "
                                                           "the way to run offline)."),
    backend: Optional[str] = typer.Option(None, help="hf (default) or vllm (when installed)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps (default: auto)."),
    dtype: Optional[str] = typer.Option(None, help="auto|float32|bfloat16|float16 (auto: bf16 on GPU, fp32 on CPU)."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer to use instead of the model's own."),
    log_samples: Optional[bool] = typer.Option(None, "--log-samples/--no-log-samples",
                                               help="Write every response to samples/<task>.jsonl."),
    base_model: Optional[str] = typer.Option(None, help="Report label (default: the training run's model, "
                                                        "else --model)."),
    method: Optional[str] = typer.Option(None, help="Report label (default: the training run's loss, else base)."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code/--no-trust-remote-code"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Exact run folder (new or empty)."),
    results_dir: Optional[Path] = typer.Option(None, help="Where timestamped run folders go (default: results)."),
) -> None:
    """Evaluate a model on lm-evaluation-harness tasks (the paper's protocol with --preset paper)."""
    import logging

    from lmdisp.evaluation import load_evaluate_config, run_evaluate

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-call INFO/WARNING chatter
    flags = {"model": model, "tasks": tasks, "num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size,
             "seed": seed, "gen_kwargs": gen_kwargs, "include_path": include_path and str(include_path),
             "backend": backend, "device": device, "dtype": dtype, "tokenizer": tokenizer, "log_samples": log_samples,
             "base_model": base_model, "method": method, "trust_remote_code": trust_remote_code,
             "output": output and str(output), "results_dir": results_dir and str(results_dir)}
    cfg = load_evaluate_config(preset, flags)
    run = run_evaluate(cfg, stage=lambda msg: console.print(f"[dim]{msg}[/]"))
    _print_table(run)
    console.print(f"results: [bold]{run.path}[/]")


def _print_table(run) -> None:
    from rich.table import Table

    labels = run.manifest.get("labels", {})
    table = Table(title=f"{run.manifest.get('model')} · seed {run.manifest.get('seed')}",
                  caption=f"report row: {labels.get('base_model')} / {labels.get('method')} · "
                          f"batch size {run.manifest.get('model_info', {}).get('batch_size')} · "
                          f"{run.manifest.get('wall_time_s', 0):.1f} s")
    table.add_column("task", overflow="fold")
    for col in ("metric", "value", "± stderr", "n-shot", "n", "limit"):
        table.add_column(col, justify="right")
    for row in run.table.itertuples(index=False):
        limit = "" if row.limit is None or row.limit != row.limit else f"{row.limit:g}"
        table.add_row(row.task, row.metric, f"{row.value:.2f}{row.unit}", f"{row.stderr:.2f}",
                      str(row.n_shot), str(row.n), limit)
    console.print(table)
