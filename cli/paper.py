"""`lmdisp paper`: every figure and table of the paper as one resumable plan, then one report.

    lmdisp paper --scale mini                        # offline, one CPU, ~20 minutes
    lmdisp paper --scale full --dry-run              # every job: command line, dependencies, GPU hours
    lmdisp paper --scale full --only fig7,table2     # a part (and what it needs)
    lmdisp paper --scale full --executor gpus        # a GPU node: jobs packed onto the visible GPUs
    lmdisp paper --scale full --executor slurm --partition gpu --time 720   # one Slurm job per plan job
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from lmdisp.cli.ui import console

EXECUTORS = ("local", "gpus", "slurm", "submitit-local")


_APP: list = []  # the `lmdisp` Typer app, attached by lmdisp.cli.main (which imports this module)


def attach(app) -> None:
    _APP[:] = [app]


def invoke_cli(argv: list[str]) -> None:
    """`lmdisp ARGV` in this process (the local executor's way to run a job)."""
    import click

    from lmdisp.errors import LmdispError

    try:  # standalone_mode=False: click returns an Exit's code instead of exiting
        code = _APP[0](args=argv, prog_name="lmdisp", standalone_mode=False)
    except click.ClickException as exc:
        raise RuntimeError(f"lmdisp {argv[0]}: {exc.format_message()}") from None
    except LmdispError as exc:
        raise RuntimeError(f"lmdisp {argv[0]}: {exc}") from None
    if code in (130, 143):  # Ctrl-C or SIGTERM reached the job: stop the plan (a rerun resumes)
        raise KeyboardInterrupt(f"lmdisp {argv[0]} was stopped; run the same `lmdisp paper` again to continue")
    if isinstance(code, int) and code:  # never marked done
        raise RuntimeError(f"lmdisp {argv[0]}: exit code {code}")


def _event(what: str, job, detail: str) -> None:
    colour = {"skip": "dim", "done": "green", "fail": "red", "aside": "yellow", "resume": "yellow"}.get(what, "")
    text = f"{what:>6} {job.id}" + (f"  ({detail})" if detail else "")
    console.print(f"[{colour}]{text}[/]" if colour else text, highlight=False, soft_wrap=True)


def _dry_run(plan, jobs) -> None:
    from lmdisp.paper.report_data import plan_rows

    rows, totals = plan_rows(plan, jobs)
    for r in rows:
        console.print(f"[bold]{r['id']}[/] [dim]{r['kind']} · {r['status']} · {r['cost']}[/]", highlight=False)
        if r["deps"]:
            console.print(f"    needs: {', '.join(r['deps'])}", highlight=False, soft_wrap=True)
        console.print(f"    {r['command']}", highlight=False, markup=False, soft_wrap=True)
    console.print("\n[bold]artefact[/]  jobs  GPU hours at full scale (paper's figures where it gives them)")
    for art, (n, hours, mins) in totals.items():
        minutes = f"  ~{mins:.0f} CPU-min at {plan.scale} scale" if mins else ""
        console.print(f"{art:9} {n:5}  {hours:.1f}{minutes}", highlight=False)


def paper(
    scale: Annotated[str, typer.Option(help="full (the paper; hub and GPUs) | mini (offline, one CPU, ~20 min) "
                                            "| smoke (a few jobs, for tests)")] = "mini",
    only: Annotated[Optional[str], typer.Option(help="Comma-separated artefacts (fig2, figS2, fig3, fig4, fig5, "
                                                     "fig7, table2..table5) or job ids; with their dependencies.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every job (command line, dependencies, "
                                                            "expected cost, status) and run nothing.")] = False,
    root: Annotated[Optional[str], typer.Option("--output", "-o", help="Plan folder (default "
                                                                       "results/paper/<scale>).")] = None,
    executor: Annotated[str, typer.Option(help="local (one job at a time) | gpus (packed onto the visible GPUs) "
                                               "| slurm (submitit) | submitit-local")] = "local",
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.", rich_help_panel="Slurm")] = None,
    account: Annotated[Optional[str], typer.Option(help="Slurm account.", rich_help_panel="Slurm")] = None,
    time_min: Annotated[Optional[int], typer.Option("--time", help="Slurm time limit per job, minutes.",
                                                    rich_help_panel="Slurm")] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option(help="GPUs per Slurm job (default: each job's own).",
                                                        rich_help_panel="Slurm")] = None,
    slurm_config: Annotated[Optional[str], typer.Option(help="YAML of Slurm settings (keys: partition, account, "
                                                             "time_min, gpus_per_job, cpus_per_task, mem_gb).",
                                                        rich_help_panel="Slurm")] = None,
    report: Annotated[bool, typer.Option(help="Write report.html and report.md when the jobs are done.")] = True,
    readme: Annotated[Optional[str], typer.Option(help="Also refill this README's `paper-plan` and "
                                                       "`paper-claims` blocks (make paper does).")] = None,
) -> None:
    """Reproduce the paper: every figure and table as one resumable plan of jobs, then one report."""
    from lmdisp.errors import ConfigError
    from lmdisp.paper import build_plan

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor}: choose one of {', '.join(EXECUTORS)}")
    plan = build_plan(scale, root)
    jobs = plan.select([s.strip() for s in only.split(",") if s.strip()] if only else None)
    if dry_run:
        _dry_run(plan, jobs)
        return
    from lmdisp.paper.execute import plan_lock

    t0 = time.perf_counter()
    with plan_lock(plan):
        outcome = _execute(plan, jobs, executor, dict(partition=partition, account=account, time_min=time_min,
                                                      gpus_per_job=gpus_per_job), slurm_config)
    console.print(f"{len(outcome.done)} job(s) run, {len(outcome.skipped)} already complete, "
                  f"{len(outcome.failed)} failed, {len(outcome.blocked)} waiting on a failed job "
                  f"({time.perf_counter() - t0:.0f} s)")
    for jid, why in outcome.failed.items():
        console.print(f"[red]failed[/] {jid}: {why} (log: {plan.root}/.jobs/{jid}.log)", highlight=False)
    if report:
        from lmdisp.paper.report import write_report

        with plan_lock(plan):
            written = write_report(plan)
        console.print(f"report: [bold]{written}[/]", soft_wrap=True)
        if readme:
            _readme(plan, readme)
    if not outcome.ok:
        raise typer.Exit(1)


def _readme(plan, readme: str) -> None:
    from pathlib import Path

    from lmdisp.paper import build_plan
    from lmdisp.paper.readme import plan_table, update_block

    path = Path(readme)
    mini = plan if plan.scale == "mini" else build_plan("mini")
    update_block(path, "paper-plan", plan_table(build_plan("full"), mini))
    if plan.scale == "mini":
        update_block(path, "paper-claims", (plan.root / "claims.md").read_text())
    console.print(f"README blocks refilled: [bold]{path}[/]")


def _execute(plan, jobs, executor: str, slurm: dict, slurm_config: str | None):
    if executor == "local":
        from lmdisp.paper.execute import run_local

        return run_local(plan, jobs, _event, invoke_cli)
    if executor == "gpus":
        from lmdisp.paper.cluster import run_packed, visible_gpus

        gpus = visible_gpus()
        if not gpus:
            from lmdisp.errors import ConfigError

            raise ConfigError("--executor gpus: no GPU is visible here; use --executor local")
        return run_packed(plan, jobs, gpus, _event)
    from lmdisp.paper.cluster import SlurmOptions, submit

    opts = SlurmOptions.from_file(slurm_config, cluster="slurm" if executor == "slurm" else "local", **slurm)
    return submit(plan, jobs, opts, _event)
