"""`lmdisp measure [MODEL ...]`: parse options, call `lmdisp.measure.run_measure`, print the table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cli.ui import console, progress_bar


def measure(
    models: Optional[List[str]] = typer.Argument(
        None, help="Hub ids, local folders, .gguf files, aliases (smollm2-135m) or random:<config>. "
                   "Default: the bundled offline smollm2-135m."),
    dataset: str = typer.Option("wikipedia", help="wikipedia|pubmed|imdb|squad, builtin (offline), a local "
                                                  ".txt/.jsonl/.parquet file or folder, or any HF dataset id."),
    text_field: Optional[str] = typer.Option(None, help="Column holding the text (hub/local datasets)."),
    split: str = typer.Option("train", help="Dataset split for hub datasets."),
    subset: Optional[str] = typer.Option(None, help="Dataset config name for hub datasets."),
    texts: Optional[Path] = typer.Option(None, help="Fixed texts (.txt one per line, or .jsonl `text`); "
                                                    "repetition r uses text r mod N."),
    repetitions: int = typer.Option(100, "--repetitions", "-r", help="Texts to average over (paper: 100)."),
    max_length: int = typer.Option(512, help="Tokens per text (paper: 512)."),
    min_words: int = typer.Option(1024, help="Minimum words per sampled text."),
    max_words: int = typer.Option(1280, help="Maximum words per sampled text."),
    seed: int = typer.Option(0, help="Repetition r samples its text with seed SEED + r."),
    batch_size: Optional[int] = typer.Option(None, help="Repetitions per forward pass (default: 1 on CPU, 8 on GPU)."),
    dtype: str = typer.Option("auto", help="auto|float32|bfloat16|float16 (auto: bf16 on GPU, fp32 on CPU)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, mps."),
    device_map: Optional[str] = typer.Option(None, help="`auto` spreads a large model over all GPUs."),
    metrics: str = typer.Option("", help="Extra per-layer geometry (costs an SVD per layer): "
                                         "entropy,variance or all."),
    include_logits: bool = typer.Option(False, help="Add the output logits as an extra layer."),
    save_matrices: bool = typer.Option(False, help="Write the (L+1, S, S) mean matrices as matrices.npz."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer to use instead of the model's own."),
    trust_remote_code: bool = typer.Option(False, help="Allow model repos to run their own code."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Exact run folder (new or empty)."),
    results_dir: Path = typer.Option(Path("results"), help="Where timestamped run folders go."),
    plots: bool = typer.Option(True, help="Write the heatmap and trend plots."),
) -> None:
    """Measure embedding condensation: per-layer token cosine similarity, paper protocol by default."""
    from lmdisp.measure import MeasureConfig, run_measure
    from lmdisp.models import DEFAULT_MODEL

    cfg = MeasureConfig(
        models=list(models or [DEFAULT_MODEL]), dataset=dataset, text_field=text_field, split=split,
        subset=subset, texts=str(texts) if texts else None, repetitions=repetitions,
        max_length=max_length, min_words=min_words, max_words=max_words, seed=seed,
        batch_size=batch_size, dtype=dtype, device=device, device_map=device_map, metrics=metrics,
        include_logits=include_logits, save_matrices=save_matrices, tokenizer=tokenizer,
        trust_remote_code=trust_remote_code, output=str(output) if output else None,
        results_dir=str(results_dir), plots=plots,
    )
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_start(spec: str) -> None:
            bar.console.print(f"loading [bold]{spec}[/]")

        def on_progress(spec: str, done: int, total: int) -> None:
            if spec not in tasks:
                tasks[spec] = bar.add_task(spec, total=total)
            bar.update(tasks[spec], completed=done)

        run = run_measure(cfg, progress=on_progress, on_model_start=on_start)
    _print_table(run)
    console.print(f"results: [bold]{run.path}[/]")


def _print_table(run) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Embedding condensation", box=box.SIMPLE_HEAD, caption="ρ, τ: Spearman, Kendall of mean cosine similarity "
                  "vs layer (positive = condenses with depth); L: blocks; cos[0], cos[L]: embedding and last layer; s: seconds")
    table.add_column("model", no_wrap=True, min_width=12)
    for col in ("params", "L", "ρ", "τ", "cos[0]", "cos[L]", "s"):
        table.add_column(col, justify="right")
    for row in run.table.itertuples(index=False):
        table.add_row(row.model, f"{row.params / 1e6:.1f}M", str(row.layers), f"{row.spearman_rho:+.3f}",
                      f"{row.kendall_tau:+.3f}", f"{row.mean_cos_first:.3f}", f"{row.mean_cos_last:.3f}",
                      f"{row.wall_time_s:.1f}")
    console.print(table)
