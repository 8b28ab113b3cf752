"""The README's "Reproduce the paper" blocks, written by `lmdisp paper --readme README.md`
(never typed by hand): the plan per artefact (jobs, GPU hours at full scale, minutes measured at
this scale) and the report's claim sentences."""

from __future__ import annotations

import re
from pathlib import Path

from lmdisp.paper.plan import ARTEFACTS, Plan
from lmdisp.paper.state import DONE, read_marker

WHAT = {"fig2": "measure the GPT-2, Qwen1, Qwen2.5, Qwen3, Bloom families, figure",
        "figS2": "measure every GPT-2 size on wikitext, pubmed_qa, imdb, squad, figure",
        "fig3": "pretrain the MLP widths, measure, figure",
        "fig4": "measure Olmo-3-1025-7B from initialisation to the base model, figure",
        "fig5": "measure the base/distilled pairs, figure",
        "fig7": "midtrain ce + dispersion (the authors' lambda), measure every checkpoint, figure",
        "table2": "midtrain every row and seed of the 4 models, evaluate every checkpoint, base rows, report",
        "table3": "midtrain the location rows (GPT-2), evaluate, report",
        "table4": "midtrain the lambda/tau rows (GPT-2), evaluate, report",
        "table5": "pretrain Qwen3-0.6B with ce and with dispersion, evaluate, report"}


def plan_table(full: Plan, mini: Plan) -> str:
    """Markdown: per artefact, what runs, jobs, GPU hours at full scale, minutes at mini scale
    (measured: the wall times in its done markers; estimated where a job has not run)."""
    lines = ["| artefact | what runs (full scale) | jobs | GPU hours, full | minutes, mini |", "|---|---|---|---|---|"]
    for art in ARTEFACTS:
        jobs = [j for j in full.jobs.values() if art in j.artefacts]
        hours = sum(j.gpu_hours or 0 for j in jobs)
        paper = any(j.cost_source.startswith("paper") for j in jobs)
        minis = [j for j in mini.jobs.values() if art in j.artefacts]
        measured = [read_marker(mini, j, DONE) for j in minis]
        if minis and all(measured):
            minutes = f"{sum(m['wall_time_s'] for m in measured) / 60:.1f}"
        elif minis:
            minutes = f"~{sum(j.minutes or 0 for j in minis):.0f} (estimate)"
        else:
            minutes = "not at mini scale"
        lines.append(f"| {art} | {WHAT[art]} | {len(jobs)} | {hours:.1f}{'' if paper else ' (estimate)'} "
                     f"| {minutes} |")
    return "\n".join(lines) + "\n\nGPU hours: Table 2's A100 hours for its training rows; estimates elsewhere " \
                              "(`lmdisp paper --scale full --dry-run` names each job's source).\n"


def update_block(readme: Path, name: str, text: str) -> bool:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; False if absent."""
    source = readme.read_text()
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(source):
        return False
    readme.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), source))
    return True
