"""The paper at mini scale (offline, one CPU, about 20 minutes) and smoke scale (a few jobs, for
the tests). Same structure and the same shipped configs as the full plan, shrunk:

- Feature 1: the bundled SmolLM2-135M next to a fresh initialisation of its architecture (fig2)
  and the controlled MLP-width pre-training of four tiny GPT-2s (fig3);
- Feature 3: one tiny pre-training with checkpoints on a doubling schedule from initialisation,
  each measured (fig4);
- Feature 4: a tiny student distilled from the widest fig3 model vs the same student on
  cross-entropy alone (fig5);
- Figure 7 and Tables 2-4: a tiny GPT-2 pre-trained by the plan, then mid-trained with the
  paper's configs (configs/midtrain/gpt2-<row>.yaml) at 2 seeds; Table 5: the Table 5 configs
  from scratch on a tiny Llama, 2 seeds. Evaluation: offline lm-eval tasks written by the plan
  from the builtin corpus (`lmdisp.paper.tasks`).
"""

from __future__ import annotations

from lmdisp.paper.full import models_config, with_figure7_runs
from lmdisp.paper.plan import Job

SEEDS = ("1", "2")
_CORPUS = ["--dataset", "builtin"]
_MEASURE = [*_CORPUS, "--repetitions", "4", "--max-length", "64", "--min-words", "96", "--max-words", "128",
            "--bootstrap", "200", "--save-matrices"]
_SHAPE = ["--context-length", "64", "--batch-size", "8", "--grad-accum", "1", "--set", "global_batch=0", "--lr", "0.001",
          "--precision", "fp32", "--no-gradient-checkpointing", "--set", "logging_steps=8",
          "--set", "condensation_every=0"]
MINI_WIDTHS = (16, 64, 256, 1024)
FIG4_STEPS = (4, 8, 16, 32)
BASE_LABEL = ("--base-model", "tiny-gpt2 (mini base)")  # the report's block: base row and mid-trained rows      # doubling schedule; step 0 is the initialisation, the end is final/


def _train(jid: str, arts: list[str], command: str, *args: str, deps=(), minutes: float = 0.3) -> Job:
    return Job(jid, "train", [command, *args, *_CORPUS, *_SHAPE, "--output", "{out}", "--resume"], arts,
               list(deps), None, "mini scale: CPU", 0, minutes)


def _measure(jid: str, arts: list[str], models: list[str], deps=(), minutes: float = 0.3) -> Job:
    return Job(jid, "measure", ["measure", *models, *_MEASURE, "--output", "{out}"], arts, list(deps),
               None, "mini scale: CPU", 0, minutes)


def _figure(art: str, layout: str, deps: list[str], *extra: str) -> Job:
    return Job(f"{art}/figure", "figure", ["lmdisp.paper.steps", "figure", layout, "--output", "{out}", *extra,
                                           *[f"{{dep:{d}}}" for d in deps]], [art], deps, None, "CPU", 0, 0.1)


def _evaluate(jid: str, art: str, model: str, seed: str, deps: list[str], checkpoints: bool = True,
              labels: tuple[str, ...] = ()) -> Job:
    argv = ["evaluate", "--model", model, "--config", "{dep:tasks}/preset.yaml", "--seed", seed, *labels,
            "--output", "{out}"]
    if checkpoints:
        argv[-2:-2] = ["--checkpoints", "all"]
    return Job(jid, "evaluate", argv, [art], ["tasks", *deps], None, "mini scale: CPU", 0, 0.2)


def _report(jid: str, art: str, evals: list[str], *extra: str) -> Job:
    return Job(jid, "tabulate", ["report", *[f"{{dep:{e}}}" for e in evals], *extra, "--output", "{out}"],
               [art], evals, None, "CPU", 0, 0.05)


def feature_jobs(smoke: bool) -> list[Job]:
    """fig2 (real vs initialised), fig3 (MLP widths), fig4 (checkpoints from init), fig5 (distillation)."""
    jobs = []
    if not smoke:
        jobs.append(_measure("fig2/measure", ["fig2"], ["smollm2-135m", "random:smollm2-135m"], minutes=1.5))
        jobs.append(_figure("fig2", "families", ["fig2/measure"], "--heatmaps", "SmolLM2", "--labels", "SmolLM2"))
    widths = MINI_WIDTHS[:2] if smoke else MINI_WIDTHS
    tokens = "4k" if smoke else "24k"
    for w in widths:
        jobs.append(_train(f"fig3/pretrain-mlp{w}", ["fig3"], "pretrain", "--config", "configs/pretrain/"
                           "gpt2-mlp384.yaml", "--model", f"mini-gpt2-mlp{w}", "--train-tokens", tokens,
                           "--seed", "1"))
    deps = [f"fig3/pretrain-mlp{w}" for w in widths]
    jobs.append(_measure("fig3/measure", ["fig3"], [f"{{dep:{d}}}/final" for d in deps], deps))
    jobs.append(_figure("fig3", "widths", ["fig3/measure"], "--labels", ",".join(f"MLP dim = {w}" for w in widths)))
    if smoke:
        return jobs
    jobs.append(_train("fig4/pretrain", ["fig4"], "pretrain", "--config", "configs/pretrain/gpt2-mlp384.yaml",
                       "--model", "mini-gpt2-mlp256", "--train-tokens", "32k", "--seed", "1",
                       "--set", "save_steps=4", "--set", "save_total_limit=100"))
    ckpts = [f"{{dep:fig4/pretrain}}/checkpoints/checkpoint-{s}" for s in FIG4_STEPS]
    jobs.append(_measure("fig4/measure", ["fig4"], ["random:mini-gpt2-mlp256", *ckpts, "{dep:fig4/pretrain}/final"],
                         ["fig4/pretrain"]))
    jobs.append(_figure("fig4", "checkpoints", ["fig4/measure"], "--labels",
                        ",".join(["init", *[f"step {s}" for s in FIG4_STEPS], "final"])))
    jobs.append(_train("fig5/distill", ["fig5"], "distill", "--model", "random:mini-gpt2-mlp64", "--teacher",
                       "{dep:fig3/pretrain-mlp1024}/final", "--train-tokens", "24k", "--seed", "1",
                       deps=["fig3/pretrain-mlp1024"]))
    jobs.append(_measure("fig5/measure", ["fig5"], ["{dep:fig3/pretrain-mlp64}/final", "{dep:fig5/distill}/final"],
                         ["fig3/pretrain-mlp64", "fig5/distill"]))
    jobs.append(_figure("fig5", "pairs", ["fig5/measure"], "--labels", "cross-entropy,distilled"))
    return jobs


def table_jobs(smoke: bool) -> list[Job]:
    cfg = models_config()
    seeds = SEEDS[:1] if smoke else SEEDS
    jobs: dict[str, Job] = {"tasks": Job("tasks", "prepare", ["lmdisp.paper.steps", "tasks", "--output", "{out}", "--limit",
                                                   "24" if smoke else "30"],
                                         ["table2", "table3", "table4", "table5"], [], None, "CPU", 0, 0.05)}
    jobs["base"] = _train("base", ["table2"] if smoke else ["table2", "table3", "table4", "fig7"], "pretrain", "--config", "configs/pretrain/gpt2-mlp384.yaml",
                          "--model", "tiny-gpt2", "--train-tokens", "8k" if smoke else "64k", "--seed", "0",
                          minutes=0.5)
    tables = {"table2": ["ce", "dispersion"] if smoke else cfg["table2_rows"]}
    if not smoke:
        tables.update(table3=cfg["table3_rows"], table4=cfg["table4_rows"])
    evals: dict[str, list[str]] = {t: [] for t in tables}
    for seed in seeds:
        jobs[f"table2/eval-base-seed{seed}"] = _evaluate(f"table2/eval-base-seed{seed}", "table2", "{dep:base}/final",
                                                         seed, ["base"], False, (*BASE_LABEL, "--method", "base"))
        evals["table2"].append(f"table2/eval-base-seed{seed}")
    for table, rows in tables.items():
        for row in rows:
            home = "table2" if row in tables["table2"] else table
            for seed in seeds:
                tid, eid = f"{home}/{row}-seed{seed}", f"{home}/eval-{row}-seed{seed}"
                if tid not in jobs:
                    jobs[tid] = _train(tid, [table], "midtrain", "--config", f"configs/midtrain/gpt2-{row}.yaml",
                                       "--model", "{dep:base}/final", "--train-tokens", "4k" if smoke else "8k",
                                       "--seed", seed, "--set", "eval_points=2", deps=["base"])
                    jobs[eid] = _evaluate(eid, table, f"{{dep:{tid}}}", seed, [tid], False, BASE_LABEL)
                for jid in (tid, eid):
                    if table not in jobs[jid].artefacts:
                        jobs[jid].artefacts.append(table)
                evals[table].append(eid)
    for table, ids in evals.items():
        jobs[f"{table}/report"] = _report(f"{table}/report", table, ids, "--select", "best")
    out = list(jobs.values())
    if not smoke:
        out += table5_jobs(seeds) + fig7_jobs(cfg)
    return out


def table5_jobs(seeds) -> list[Job]:
    jobs, evals = [], []
    for row in ("qwen3-0.6b-ce", "qwen3-0.6b-dispersion"):
        for seed in seeds:
            tid, eid = f"table5/{row}-seed{seed}", f"table5/eval-{row}-seed{seed}"
            jobs.append(_train(tid, ["table5"], "pretrain", "--config", f"configs/pretrain/{row}.yaml", "--model",
                               "tiny-llama", "--train-tokens", "16k", "--seed", seed, "--set", "warmup_steps=4"))
            jobs.append(_evaluate(eid, "table5", f"{{dep:{tid}}}", seed, [tid], checkpoints=False))
            evals.append(eid)
    return [*jobs, _report("table5/report", "table5", evals)]


def fig7_jobs(cfg: dict) -> list[Job]:
    jobs = []
    for name, row in cfg["fig7_runs"].items():
        row = row.removeprefix("gpt2-")
        dep = f"{'table2' if row in cfg['table2_rows'] else 'table4'}/{row}-seed1"
        jobs.append(_measure(f"fig7/measure-{name}", ["fig7"], ["{dep:base}/final", f"{{ckpts:{dep}}}"], ["base", dep]))
    jobs.append(_figure("fig7", "steps", [j.id for j in jobs], "--labels", ",".join(cfg["fig7_runs"])))
    return jobs


# Run order when time is short: every figure's evidence first, then Table 2 and Figure 7, Table 5,
# and the ablations (a plan stopped part-way reports the most claims).
_PRIORITY = {"fig2": 0, "fig3": 0, "fig4": 0, "fig5": 0, "table2": 1, "fig7": 2, "table5": 3, "table3": 4, "table4": 5}


def mini_jobs(smoke: bool = False) -> list[Job]:
    jobs = with_figure7_runs([*table_jobs(smoke), *feature_jobs(smoke)])
    return sorted(jobs, key=lambda j: min(_PRIORITY.get(a, 9) for a in j.artefacts))
