"""Table 2 as `lmdisp report` writes it: cells `mean ± std` with the best of each block in bold
(plain, Markdown, LaTeX with booktabs, rich), its caption, and the bar chart of the averages."""

from __future__ import annotations

DASH = "—"


def formatted(table, tasks: list[str], style: str = "plain") -> list[list[str]]:
    """Rows of cells: `mean ± std`, best of each block column in bold (markdown/latex)."""
    bold = {"plain": "{}", "markdown": "**{}**", "latex": r"\mathbf{{{}}}", "rich": "[bold]{}[/]"}[style]
    pm = r" \pm " if style == "latex" else " ± "
    higher = {c: True for c in tasks} | {"average": True, "rank": False}
    best = {}
    for base, block in table.groupby("base_model", sort=False):
        for col in (*tasks, "average", "rank"):
            vals = block[col].dropna().round(2)
            best[(base, col)] = (vals.max() if higher[col] else vals.min()) if len(vals) else None
    out = []
    for _, r in table.iterrows():
        def cell(col, std=None, n=None):
            if r[col] != r[col]:
                return DASH if style != "latex" else "--"
            text = f"{r[col]:.2f}"
            text = bold.format(text) if style != "plain" and round(r[col], 2) == best[(r["base_model"], col)] else text
            text += f"{pm}{r[std]:.2f}" if std and r[std] == r[std] else ""
            text += f" ({r[n]}/{r['n_seeds']})" if n and r[n] < r["n_seeds"] else ""
            return f"${text}$" if style == "latex" else text
        p = r["significance"]
        if style == "latex":
            p = f"$p < {p[4:]}$" if p.startswith("p < ") else {DASH: "--"}.get(p, p)
        out.append([r["base_model"], r["method"], r["seeds"], r["steps"],
                    *[cell(t, f"{t}_std", f"{t}_n") for t in tasks], cell("average", "average_std"), cell("rank"), p])
    return out


def header(tasks: list[str]) -> list[str]:
    return ["Model", "Method", "Seeds", "Step", *tasks, "Average", "Rank", "p"]


def caption(long, tasks: list[str], reference: str, select: str = "final") -> str:
    metrics = {t: sorted(set(long.loc[long["task"] == t, "metric"])) for t in tasks}
    kinds = {"/".join(m) for m in metrics.values()}
    metric = (f"metric {kinds.pop()} for every task" if len(kinds) == 1
              else "metrics: " + ", ".join(f"{t} {'/'.join(m)}" for t, m in metrics.items()))
    return (f"Mean ± sample std (n - 1) over seeds, in %; {metric}. Average over the {len(tasks)} tasks; "
            "Rank: mean over tasks of the rank within the base model's block (1 = best); p: Student's "
            f"t-test of the per-seed averages against the {reference} row (ref.). Best of each block in bold. "
            + SELECT_NOTE[select])


SELECT_NOTE = {
    "final": "Step: the checkpoint evaluated per seed (final: the run's final model).",
    "best": "Step: per seed, the checkpoint with the best average over these tasks (the authors' selection, "
            "made on the test data itself; an optimistic estimate). Step 0 is the starting model.",
    "best-trained": "Step: per seed, the trained checkpoint with the best average over these tasks (step 0 "
                    "left out; made on the test data itself, an optimistic estimate).",
}


def markdown(table, tasks, cap: str, notes: list[str]) -> str:
    lines = ["| " + " | ".join(header(tasks)) + " |", "|" + "---|" * len(header(tasks))]
    rows = formatted(table, tasks, "markdown")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", cap] + (["", "Notes:", *[f"- {n}" for n in notes]] if notes else [])
    return "\n".join(lines) + "\n"


def latex(table, tasks, cap: str, notes: list[str]) -> str:
    def esc(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
            s = s.replace(a, b)
        return s
    rows = formatted(table, tasks, "latex")
    lines = ["% needs \\usepackage{booktabs}", *[f"% note: {esc(n)}" for n in notes],
             r"\begin{table}[t]", r"\centering", r"\small", r"\resizebox{\linewidth}{!}{%",
             r"\begin{tabular}{ll" + "r" * (len(tasks) + 5) + "}", r"\toprule",
             " & ".join(esc(h) for h in header(tasks)) + r" \\", r"\midrule"]
    last = None
    for row in rows:
        if last is not None and row[0] != last:
            lines.append(r"\midrule")
        cells = [esc(row[0]) if row[0] != last else "", esc(row[1]), esc(row[2]), esc(row[3]), *row[4:]]
        lines.append(" & ".join(cells) + r" \\")
        last = row[0]
    cap_tex = esc(cap).replace("±", r"$\pm$")
    lines += [r"\bottomrule", r"\end{tabular}}", rf"\caption{{{cap_tex}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def bar_chart(table):
    """Averages with std error bars, one panel per base model; the reference row in a dark colour."""
    import matplotlib.pyplot as plt

    blocks = [(b, g.dropna(subset=["average"])) for b, g in table.groupby("base_model", sort=False)]
    blocks = [(b, g) for b, g in blocks if len(g)]
    fig, axes = plt.subplots(1, max(len(blocks), 1), figsize=(max(4.0, 1.2 * len(table) + 1.5), 3.6),
                             squeeze=False)
    for ax, (base, g) in zip(axes[0], blocks):
        colors = ["#444444" if s == "ref." else "#d95f02" for s in g["significance"]]
        ax.bar(range(len(g)), g["average"], yerr=g["average_std"].fillna(0), color=colors, capsize=3)
        ax.set_xticks(range(len(g)), g["method"], rotation=40, ha="right", fontsize=8)
        low, high = (g["average"] - g["average_std"].fillna(0)).min(), (g["average"] + g["average_std"].fillna(0)).max()
        pad = max(0.5, 0.25 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(base, fontsize=9)
        ax.set_ylabel("average (%)")
    fig.tight_layout()
    return fig
