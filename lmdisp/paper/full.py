"""The paper at full scale: every figure and table as jobs, from `configs/paper/models.yaml`
(model lists, revisions, corpora, table rows) and the shipped training/evaluation configs.

GPU hours are per job. Training rows of Table 2 carry the paper's own A100 hours; everything
else is an estimate, marked as such (`cost_source`).
"""

from __future__ import annotations

import math
import re

from lmdisp.paper.plan import Job

# Table 2's "Training time (A100 hours)" column, per run (one seed).
PAPER_HOURS = {
    "gpt2": {"ce": 1.122, "noisy-embedding": 1.122, "active-forgetting": 1.127, "decorrelation": 1.221,
             "l2-repel": 1.175, "orthogonalization": 1.210, "dispersion": 1.176},
    "gpt2-medium": {"ce": 2.541, "noisy-embedding": 2.580, "active-forgetting": 2.580, "decorrelation": 2.760,
                    "l2-repel": 2.675, "orthogonalization": 2.692, "dispersion": 2.673},
    "qwen3-0.6b": {"ce": 4.676, "noisy-embedding": 4.839, "active-forgetting": 4.829, "decorrelation": 4.939,
                   "l2-repel": 4.864, "orthogonalization": 4.936, "dispersion": 4.878},
    "qwen3-1.7b": {"ce": 9.148, "noisy-embedding": 9.345, "active-forgetting": 9.298, "decorrelation": 9.535,
                   "l2-repel": 9.440, "orthogonalization": 9.565, "dispersion": 9.455},
}
_GPT2_PARAMS_B = {"gpt2": 0.124, "gpt2-medium": 0.355, "gpt2-large": 0.774, "gpt2-xl": 1.5}
FIG_DTYPE = "float32"
REPS = "100"


def models_config() -> dict:
    from lmdisp.config import packaged, read_yaml

    return read_yaml(packaged("paper") / "models.yaml")


def params_b(spec: str) -> float:
    """Billions of parameters from a model name (gpt2 sizes by table); 1.0 when unknown."""
    base = spec.split("@")[0].split("/")[-1].lower()
    if base in _GPT2_PARAMS_B:
        return _GPT2_PARAMS_B[base]
    m = re.search(r"(\d+(?:[._]\d+)?)([bm])(?![a-z])", base)
    if not m:
        return 1.0
    value = float(m.group(1).replace("_", "."))
    return value / 1000 if m.group(2) == "m" else value


def gpus_for(spec: str, dtype_bytes: int = 4, gpu_gib: int = 80) -> int:
    """GPUs to hold a model's weights in float32 with 30% headroom (estimate)."""
    return max(1, math.ceil(params_b(spec) * dtype_bytes * 1.3 / gpu_gib))


def measure_hours(models: list[str], reps: int = 100, tokens: int = 512) -> float:
    """Estimate: loading plus forward passes, ~0.01 GPU-h per billion parameters per 100 x 512 tokens,
    times the GPUs a model needs, and 0.02 h per model for download and load."""
    scale = reps * tokens / (100 * 512)
    return round(sum((0.02 + 0.01 * params_b(m) * scale) * gpus_for(m) for m in models), 3)


def _measure(jid: str, art: str, models: list[str], *extra: str, deps=(), reps: str = REPS,
             remote: bool = False, tokens: int = 512) -> Job:
    argv = ["measure", *models, "--dataset", "wikipedia", "--repetitions", reps, "--dtype", FIG_DTYPE,
            "--save-matrices", *extra, "--output", "{out}"]
    if remote:
        argv.insert(-2, "--trust-remote-code")
    specs = [m for m in models if not m.startswith("{")]
    hours = measure_hours(specs or ["gpt2"] * len(models), int(reps), tokens)
    gpus = max([gpus_for(m) for m in specs] or [1])
    if gpus > 1:  # a model that needs several GPUs in float32 is spread over them
        argv[-2:-2] = ["--device-map", "auto"]
    return Job(jid, "measure", argv, [art], list(deps), hours, "estimate: model size x tokens", gpus)


def _figure(art: str, layout: str, deps: list[str], *extra: str) -> Job:
    argv = ["lmdisp.paper.steps", "figure", layout, "--output", "{out}", *extra,
            *[f"{{dep:{d}}}" for d in deps]]
    return Job(f"{art}/figure", "figure", argv, [art], deps, 0.0, "CPU only", 0)


def figure_jobs(cfg: dict) -> list[Job]:
    jobs: list[Job] = []
    fams = cfg["families"]
    for fam, models in fams.items():
        jobs.append(_measure(f"fig2/measure-{slugf(fam)}", "fig2", models, remote=fam in cfg["remote_code"]))
    jobs.append(_figure("fig2", "families", [f"fig2/measure-{slugf(f)}" for f in fams],
                        "--heatmaps", ",".join(cfg["heatmaps"]), "--labels", ",".join(fams)))
    for corpus in cfg["corpora"]:
        job = _measure(f"figS2/measure-{corpus}", "figS2", fams["GPT2"])
        job.argv[job.argv.index("wikipedia")] = corpus
        jobs.append(job)
    jobs.append(_figure("figS2", "corpora", [f"figS2/measure-{c}" for c in cfg["corpora"]],
                        "--labels", ",".join(cfg["corpora"])))
    jobs += fig3_jobs(cfg)
    olmo = [f"{cfg['fig4_model']}@{rev}" for rev in cfg["fig4_revisions"]]
    jobs.append(_measure("fig4/measure", "fig4", olmo))
    jobs.append(_figure("fig4", "checkpoints", ["fig4/measure"], "--labels",
                        ",".join(revision_label(r) for r in cfg["fig4_revisions"])))
    pairs = [m for pair in cfg["fig5_pairs"] for m in pair]
    jobs.append(_measure("fig5/measure", "fig5", pairs))
    jobs.append(_figure("fig5", "pairs", ["fig5/measure"]))
    runs = cfg["fig7_runs"]
    train = {name: f"table{'2' if row == 'gpt2-ce' else '4'}/{row.replace('gpt2-', 'gpt2/', 1)}-seed1"
             for name, row in runs.items()}
    for name, dep in train.items():
        jobs.append(_measure(f"fig7/measure-{name}", "fig7", ["gpt2", f"{{ckpts:{dep}}}"], "--max-length", "1024",
                             deps=[dep], reps="10", tokens=1024))
    jobs.append(_figure("fig7", "steps", [f"fig7/measure-{n}" for n in runs], "--labels", ",".join(runs)))
    return jobs


def fig3_jobs(cfg: dict) -> list[Job]:
    jobs = []
    for width in cfg["fig3_widths"]:
        jobs.append(Job(f"fig3/pretrain-mlp{width}", "train",
                        ["pretrain", "--config", f"configs/pretrain/gpt2-mlp{width}.yaml", "--seed", "1",
                         "--output", "{out}", "--resume"], ["fig3"], [], 5.6,
                        "estimate: Table 2's 1.122 A100 h per 200M GPT-2 tokens, x5 for 1B tokens", 1))
    deps = [j.id for j in jobs]
    jobs.append(_measure("fig3/measure", "fig3", [f"{{dep:{d}}}/final" for d in deps], "--max-length", "1024",
                         deps=deps, tokens=1024))
    jobs.append(_figure("fig3", "widths", ["fig3/measure"], "--labels",
                        ",".join(f"MLP dim = {w}" for w in cfg["fig3_widths"])))
    return jobs


def revision_label(rev: str) -> str:
    """The paper's tick labels: stage1-step353000 -> S1-353k, main -> Main."""
    m = re.fullmatch(r"stage(\d+)-step(\d+)", rev)
    if not m:
        return rev.capitalize()
    step = int(m.group(2))
    return f"S{m.group(1)}-{step // 1000}k" if step >= 1000 else f"S{m.group(1)}-{step}"


def slugf(name: str) -> str:
    return name.lower().replace(".", "")


def table_jobs(cfg: dict) -> list[Job]:
    jobs: dict[str, Job] = {}
    seeds = [str(s) for s in cfg["seeds"]]
    blocks = [("table2", m, cfg["table2_rows"]) for m in cfg["table2_models"]]
    blocks += [("table3", "gpt2", cfg["table3_rows"]), ("table4", "gpt2", cfg["table4_rows"])]
    evals_by_table: dict[str, list[str]] = {}
    for table, model, rows in blocks:
        preset = "paper-qwen3" if "qwen3" in model else "paper"
        bases = [hub_id(model), *cfg["table2_references"].get(model, [])] if table == "table2" else []
        for spec in bases:
            for seed in seeds:  # the base row at seeds 1-3 (mean, std and a t-test), as the authors did
                jid = f"table2/{model}/base-{slug_id(spec)}-seed{seed}"
                if jid not in jobs:
                    jobs[jid] = _evaluate(jid, table, spec, preset, seed, [], eval_hours(spec, 1))
                evals_by_table.setdefault(f"{table}/{model}", []).append(jid)
        for row in rows:
            home = "table2" if row in cfg["table2_rows"] else table
            for seed in seeds:
                tid, eid = f"{home}/{model}/{row}-seed{seed}", f"{home}/{model}/eval-{row}-seed{seed}"
                if tid not in jobs:
                    hours = PAPER_HOURS.get(model, {}).get(row)
                    jobs[tid] = Job(tid, "train", ["midtrain", "--config", f"configs/midtrain/{model}-{row}.yaml",
                                                   "--seed", seed, "--output", "{out}", "--resume"], [table], [],
                                    hours if hours is not None else PAPER_HOURS.get(model, {}).get("dispersion"),
                                    "paper Table 2 (A100 hours)" if hours is not None
                                    else "estimate: Table 2's dispersion row", 1)
                    jobs[eid] = _evaluate(eid, table, f"{{dep:{tid}}}", preset, seed, [tid],
                                          eval_hours(hub_id(model), 6), checkpoints=True)
                add_artefact(jobs[tid], table)
                add_artefact(jobs[eid], table)
                evals_by_table.setdefault(f"{table}/{model}", []).append(eid)
    for key, evals in evals_by_table.items():
        table, model = key.split("/")
        jid = f"{table}/{model}/report"
        # E7: the authors' Qwen3 runs never evaluated step 0, so their maximum is over trained steps only.
        select = "best-trained" if model.startswith("qwen3") else "best"
        jobs[jid] = Job(jid, "tabulate", ["report", *[f"{{dep:{e}}}" for e in evals], "--select", select,
                                          "--output", "{out}"], [table], list(evals), 0.0, "CPU only")
    return [*jobs.values(), *table5_jobs(cfg, seeds[:1])]


def table5_jobs(cfg: dict, seeds: list[str]) -> list[Job]:
    jobs, evals = [], []
    for row in cfg["table5_rows"]:
        for seed in seeds:
            tid, eid = f"table5/{row}-seed{seed}", f"table5/eval-{row}-seed{seed}"
            jobs.append(Job(tid, "train", ["pretrain", "--config", f"configs/pretrain/{row}.yaml", "--seed", seed,
                                           "--output", "{out}", "--resume"], ["table5"], [], 80.0,
                            "estimate: 6 N D = 3.6e19 FLOP at 125 TFLOP/s per A100", 8))
            jobs.append(_evaluate(eid, "table5", f"{{dep:{tid}}}", "paper-qwen3", seed, [tid], eval_hours("0.6b", 1)))
            evals.append(eid)
    jobs.append(Job("table5/report", "tabulate", ["report", *[f"{{dep:{e}}}" for e in evals], "--reference",
                                                  "dispersion", "--output", "{out}"], ["table5"], evals, 0.0,
                    "CPU only"))
    return jobs


def _evaluate(jid, table, model, preset, seed, deps, hours, checkpoints=False) -> Job:
    argv = ["evaluate", "--model", model, "--preset", preset, "--seed", seed, "--output", "{out}"]
    if checkpoints:
        argv[-2:-2] = ["--checkpoints", "all"]
    return Job(jid, "evaluate", argv, [table], deps, round(hours, 3),
               "estimate: 10 tasks at the preset's limit, per checkpoint", 1)


def eval_hours(spec: str, checkpoints: int) -> float:
    """Estimate: 10 tasks at the preset's limit take ~0.05 GPU-h plus 0.05 per billion parameters."""
    return checkpoints * (0.05 + 0.05 * params_b(spec))


def add_artefact(job: Job, art: str) -> None:
    if art not in job.artefacts:
        job.artefacts.append(art)


def hub_id(model: str) -> str:
    return {"qwen3-0.6b": "Qwen/Qwen3-0.6B", "qwen3-1.7b": "Qwen/Qwen3-1.7B"}.get(model, model)


def slug_id(spec: str) -> str:
    return spec.split("/")[-1].lower()


def full_jobs() -> list[Job]:
    cfg = models_config()
    return with_figure7_runs([*table_jobs(cfg), *figure_jobs(cfg)])


def with_figure7_runs(jobs: list[Job]) -> list[Job]:
    """Figure 7's training runs are table rows; they count (and run) for fig7 too."""
    by_id = {j.id: j for j in jobs}
    for job in jobs:
        if job.kind == "measure" and "fig7" in job.artefacts:
            for dep in job.deps:
                add_artefact(by_id[dep], "fig7")
    return jobs
