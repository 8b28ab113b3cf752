"""The plan's one report: results/paper/<scale>/report.md and report.html.

For each figure and table of the paper: this run's version in the paper's layout next to the
paper's own numbers (`reference`), the claims judged from the numbers (`claims`), and the plan
with per-job provenance. The tables are the files `lmdisp report` wrote for the same evaluation
folders (table.md, verbatim), so the report and `lmdisp report` cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from lmdisp.paper import reference as ref
from lmdisp.paper.claims import Claim, all_claims
from lmdisp.paper.plan import Plan
from lmdisp.paper.render import to_html, to_markdown
from lmdisp.paper.state import DONE, read_marker
from lmdisp.runs import write_text

FIGURES = {"fig2": "Figure 2 / S1: larger models condense less", "figS2": "Figure S2: the four corpora",
           "fig3": "Figure 3: MLP width, everything else fixed", "fig4": "Figure 4: through pre-training",
           "fig5": "Figure 5: distillation", "fig7": "Figure 7: mid-training with ce and with dispersion"}
TABLES = {"table2": "Table 2: mid-training", "table3": "Table 3: where to apply dispersion",
          "table4": "Table 4: λ and τ", "table5": "Table 5: pre-training"}
_CLASS = {"supported": "supported", "not supported": "not", "not tested": "nt"}


def report_folders(plan: Plan) -> dict[str, list[Path]]:
    """Per table artefact, the output folders of its complete `lmdisp report` jobs."""
    out: dict[str, list[Path]] = {}
    for job in plan.jobs.values():
        if job.kind == "tabulate" and read_marker(plan, job, DONE):
            for art in job.artefacts:
                out.setdefault(art, []).append(plan.output(job))
    return out


def claim_blocks(claims: list[Claim]) -> list[tuple]:
    blocks: list[tuple] = [("section", "claims"), ("h2", "The paper's claims, judged from this run")]
    for c in claims:
        text = c.pieces or ["no data for it in this run (its jobs have not completed)."]
        blocks.append(("p", [f"**{c.key}** — {c.paper} **{c.verdict}**: ", *text]))
    return blocks


def figure_blocks(plan: Plan) -> list[tuple]:
    blocks: list[tuple] = []
    arts = plan.artefacts()
    for art, title in FIGURES.items():
        blocks += [("section", art), ("h2", title), ("p", [f"Paper: {ref.FIGURES[art]}."])]
        folder = plan.root / art / "figure"
        if art not in arts:
            why = " (one corpus offline)" if art == "figS2" else ""
            blocks.append(("p", [f"Not part of the {plan.scale} plan{why}: `lmdisp paper --scale full --only {art}`."]))
            continue
        if not (folder / "figure.json").is_file():
            blocks.append(("p", ["Not run yet: `lmdisp paper --scale " + plan.scale + f" --only {art}`."]))
            continue
        data = json.loads((folder / "figure.json").read_text())
        blocks.append(("img", str(folder / "figure.png"), title))
        rows = [[p["group"], p["label"] or p["model"], (f"{p['spearman_rho']:+.3f}", p["source"]),
                 (f"{p['kendall_tau']:+.3f}", p["source"])] for p in data["points"]]
        blocks.append(("table", ["group", "model", "Spearman ρ", "Kendall τ"], rows))
        blocks.append(("p", ["Numbers: ", ("figure.json", str(folder / "figure.json"))]))
    return blocks


def _paper_table(art: str) -> tuple | None:
    if art == "table2":
        rows = [[model, method, f"{avg:.2f}" + (f" ± {sd:.2f}" if sd else "")]
                for model, items in ref.TABLE2.items() for method, avg, sd in items]
        return ("table", ["model", "method", "paper average"], rows)
    if art == "table3":
        return ("table", ["rows (GPT-2)", "paper average"], [[m, f"{a:.2f} ± {s:.2f}"] for m, a, s in ref.TABLE3])
    if art == "table4":
        return ("table", ["row (GPT-2)", "λ", "τ", "paper average"],
                [[row, str(lt[0]), str(lt[1]), f"{ref.TABLE4[lt]:.2f}"] for row, lt in ref.TABLE4_ROWS.items()])
    if art == "table5":
        return ("table", ["loss", *ref.TASKS, "average"],
                [[m, *(f"{v:.1f}" for v in t), f"{a:.2f}"] for m, (t, a) in ref.TABLE5.items()])
    return None


def table_blocks(plan: Plan, reports: dict[str, list[Path]]) -> list[tuple]:
    blocks: list[tuple] = []
    for art, title in TABLES.items():
        blocks += [("section", art), ("h2", title)]
        if art not in plan.artefacts():
            blocks.append(("p", [f"Not part of the {plan.scale} plan."]))
            continue
        for folder in reports.get(art, []):
            blocks.append(("h3", f"This run: {folder.relative_to(plan.root)} (`lmdisp report` output)"))
            blocks.append(("mdtable", (folder / "table.md").read_text()))
            blocks.append(("p", ["Numbers: ", ("table_values.csv", str(folder / "table_values.csv")),
                                 ", runs: ", ("runs.csv", str(folder / "runs.csv"))]))
        if not reports.get(art):
            blocks.append(("p", [f"Not run yet: `lmdisp paper --scale {plan.scale} --only {art}`."]))
        if plan.scale != "full":
            blocks.append(("p", [f"At {plan.scale} scale the tasks are the plan's offline ones "
                                 "(lmdisp.paper.tasks), so only directions compare with the paper."]))
        blocks += [("h3", f"Paper ({ref.SOURCE})"), _paper_table(art)]
    return blocks


def provenance_blocks(plan: Plan) -> list[tuple]:
    rows, versions = [], set()
    for job in plan.order():
        done = read_marker(plan, job, DONE) or {}
        machine = done.get("machine") or {}
        load = machine.get("load_average")
        versions.add(json.dumps(done.get("versions", {}), sort_keys=True))
        rows.append([job.id, job.kind, "complete" if done else "not run",
                     f"{done['wall_time_s']:.1f}" if done else "", done.get("git_commit", "")[:12],
                     done.get("host", ""), f"{load[0]:.1f}" if load else "",
                     (".done.json", str(plan.root / ".jobs" / f"{job.id}.done.json")) if done else ""])
    blocks: list[tuple] = [("section", "provenance"), ("h2", "Plan and provenance"),
                           ("table", ["job", "kind", "status", "wall s", "commit", "host", "load", "marker"], rows)]
    for v in sorted(versions - {"{}"}):
        blocks.append(("p", ["Versions: " + ", ".join(f"{k} {x}" for k, x in json.loads(v).items())]))
    return blocks


def build_blocks(plan: Plan) -> tuple[list[tuple], list[Claim]]:
    reports = report_folders(plan)
    claims = all_claims(plan.root, plan.scale, reports)
    done = sum(1 for j in plan.jobs.values() if read_marker(plan, j, DONE))
    head: list[tuple] = [("section", "summary"), ("h1", f"The paper, reproduced by lmdisp at {plan.scale} scale"),
                         ("p", [f"{done} of {len(plan.jobs)} jobs complete; written "
                                f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}; plan folder "
                                f"`{plan.root}`. Every number links to the file it came from."])]
    return [*head, *claim_blocks(claims), *figure_blocks(plan), *table_blocks(plan, reports),
            *provenance_blocks(plan)], claims


def write_report(plan: Plan) -> Path:
    """Write report.md and report.html into the plan folder; returns the HTML path."""
    blocks, claims = build_blocks(plan)
    plan.root.mkdir(parents=True, exist_ok=True)
    write_text(plan.root / "report.md", to_markdown(blocks, plan.root))
    write_text(plan.root / "report.html", to_html(blocks, plan.root, f"lmdisp paper · {plan.scale}"))
    write_text(plan.root / "claims.md", headline(claims, plan.scale))
    return plan.root / "report.html"


def headline(claims: list[Claim], scale: str) -> str:
    """The claim sentences as plain text (the README's block)."""
    lines = [f"`lmdisp paper --scale {scale}` wrote (results/paper/{scale}/report.md):", ""]
    lines += [f"- **{c.key}** ({c.verdict}): {c.text() or 'not run.'}" for c in claims]
    return "\n".join(lines) + "\n"
