"""The authors' open question at small scale, offline: does SFT or RL raise or lower embedding
condensation, and does the dispersion loss hold it? (`make posttrain`)

A base model is fine-tuned on a written task (two-number addition, answers as `The answer is
N.`): SFT with TRL's loss alone (`ce`) and with `dispersion` added, `--seeds` seeds each, and a
short GRPO run (rewards: the last number is the answer, and a 4-word answer). The base model is
`--model tiny` (default: a tiny GPT-2 this script pre-trains first on the builtin corpus, a
minute, so that the whole target fits in minutes on a shared 2-core CPU) or
`--model smollm2-135m` (the bundled SmolLM2-135M-Instruct; about 1-2 s per step on an idle
2-core CPU, minutes per step when the CPU is shared). Every model (the base one and each
result) is measured on the same texts: per-layer mean cosine of the same held-out blocks
(`condensation.csv` of each run: step 0 is the base model, the last step the result) and the
task metrics on the same held-out problems: the answer's loss (mean cross-entropy of the
answer turn's tokens, teacher-forced) and the exact-match accuracy of greedy answers. Run folders go to results/posttrain/<time>/; the figures to results/bench/posttrain.{json,md}
and the README block `posttrain`;
every sentence of the block is computed from the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import device_name, publish, readme_flag  # noqa: E402

PROMPT = "What is {a} + {b}? Reply with one sentence."


def problems(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(n)]


def write_data(folder: Path, n_train: int) -> dict[str, Path]:
    """SFT rows (prompt/completion chat turns) and GRPO rows (prompt + answer); the held-out
    problems (seed 999) are never trained on."""
    folder.mkdir(parents=True, exist_ok=True)
    sft, grpo = folder / "sft.jsonl", folder / "grpo.jsonl"
    rows = problems(n_train, seed=0)
    user = lambda a, b: [{"role": "user", "content": PROMPT.format(a=a, b=b)}]  # noqa: E731
    sft.write_text("".join(json.dumps({"prompt": user(a, b), "completion": [
        {"role": "assistant", "content": f"The answer is {a + b}."}]}) + "\n" for a, b in rows))
    grpo.write_text("".join(json.dumps({"prompt": user(a, b), "answer": str(a + b)}) + "\n" for a, b in rows))
    return {"sft": sft, "grpo": grpo}


def _load(model_path: str):
    from lmdisp.models import default_tokenizer, load_model, load_tokenizer

    model = load_model(model_path, dtype="float32", device="cpu", lm_head=True).model.eval()
    tok = load_tokenizer(default_tokenizer(model_path))
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    return model, tok


def _turns(a: int, b: int) -> list[dict]:
    return [{"role": "user", "content": PROMPT.format(a=a, b=b)}]


def task_metrics(model_path: str, n: int, max_new_tokens: int = 12) -> dict:
    """On `n` held-out problems: the answer turn's mean cross-entropy (teacher-forced) and
    the exact-match accuracy of greedy answers (the last number)."""
    import torch

    from lmdisp.train.rewards import last_number

    model, tok = _load(model_path)
    held = problems(n, seed=999)
    nll, count, right = 0.0, 0, 0
    for a, b in held:
        prompt = tok.apply_chat_template(_turns(a, b), add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tok.apply_chat_template(_turns(a, b) + [{"role": "assistant", "content": f"The answer is {a + b}."}],
                                       tokenize=True)["input_ids"]
        ids = torch.tensor([full])
        labels = ids.clone()
        labels[0, :len(prompt)] = -100
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        k = int((labels[0, 1:] != -100).sum())
        nll, count = nll + float(out.loss) * k, count + k
    texts = [tok.apply_chat_template(_turns(a, b), tokenize=False, add_generation_prompt=True) for a, b in held]
    for i in range(0, n, 16):
        batch = tok(texts[i:i + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for (a, b), ids in zip(held[i:i + 16], out[:, batch["input_ids"].shape[1]:]):
            right += last_number(tok.decode(ids, skip_special_tokens=True)) == str(a + b)
    return {"answer_loss": nll / max(count, 1), "accuracy": right / n}


CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_base(out: Path, data: Path) -> str:
    """A tiny GPT-2 pre-trained here on the builtin corpus and the task's own rows (so the
    answer format is not new to it), saved with a chat template: the `tiny` base model."""
    from lmdisp.train.config import TrainConfig
    from lmdisp.train.run import run_train

    from lmdisp.train.shards import iter_records, resolve_source

    corpus = out / "pretrain.txt"
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    task = [f"{r['prompt'][0]['content']} {r['completion'][0]['content']}" for r in rows]
    text = [" ".join(t.split()) for t in iter_records(resolve_source("builtin"))]
    corpus.write_text("\n".join(task + text) + "\n")  # the task rows first: the token budget reads them all
    run = run_train(TrainConfig(model="random:tiny-gpt2", dataset=str(corpus), loss="ce", train_tokens="150k",
                                context_length=64, batch_size=16, grad_accum=1, lr=1e-3, warmup_ratio=0.1,
                                gradient_checkpointing=False, condensation_every=0, save_steps=10_000,
                                output=str(out / "pretrain")), command="pretrain")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run.final)
    tok.chat_template = CHAT
    tok.save_pretrained(run.final)
    return str(run.final)


def train(objective: str, loss: str, seed: int, data: Path, out: Path, args) -> dict:
    from lmdisp.train.posttrain_config import PostTrainConfig
    from lmdisp.train.posttrain_run import run_posttrain

    steps = args.grpo_steps if objective == "grpo" else args.steps
    cfg = PostTrainConfig(objective=objective, model=args.model, dataset=str(data), loss=loss, seed=seed,
                          max_steps=steps, lr=args.lr, batch_size=8, logging_steps=1, save_steps=10_000,
                          condensation_every=steps, condensation_sequences=args.heldout, heldout_length=128,
                          max_length=96, num_generations=4, max_completion_length=12, reward="answer,length:4",
                          output=str(out / f"{objective}-{loss}-seed{seed}"))
    started = time.time()
    run = run_posttrain(cfg)
    import pandas as pd

    trace = pd.read_csv(run.path / "condensation.csv")
    first, last = trace["step"].min(), trace["step"].max()
    return {"objective": objective, "loss": loss, "seed": seed, "steps": run.steps, "path": str(run.path),
            "before": trace[trace.step == first].sort_values("layer")["mean_cos"].tolist(),
            "after": trace[trace.step == last].sort_values("layer")["mean_cos"].tolist(),
            **task_metrics(str(run.final), args.problems), "train_seconds": round(time.time() - started, 1)}


def late(values: list[float]) -> float:
    """Mean over the late half of the blocks (where the paper finds condensation)."""
    blocks = values[1:]
    half = blocks[len(blocks) // 2:]
    return sum(half) / len(half)


def _group(runs: list[dict], objective: str, loss: str) -> list[dict]:
    return [r for r in runs if r["objective"] == objective and r["loss"] == loss]


def sentences(report: dict) -> list[str]:
    """The block's conclusions, each from the numbers of `report`."""
    runs, base = report["runs"], report["base"]
    b = late(base["condensation"])
    out = [f"Base model: late-half mean cosine {b:.3f}; on {report['settings']['problems']} held-out problems "
           f"answer loss {base['answer_loss']:.3f}, accuracy {base['accuracy']:.0%}."]
    deltas = {}
    for objective, loss in (("sft", "ce"), ("sft", "dispersion"), ("grpo", "ce")):
        group = _group(runs, objective, loss)
        if not group:
            continue
        d = [late(r["after"]) - b for r in group]
        acc = [r["accuracy"] for r in group]
        losses = [r["answer_loss"] for r in group]
        deltas[(objective, loss)] = d
        direction = ("left unchanged (|change| < 0.0005)" if all(abs(x) < 5e-4 for x in d) else "raised"
                     if all(x > 0 for x in d) else "lowered" if all(x < 0 for x in d) else "moved (signs differ)")
        name = f"{objective.upper()} with {'TRL' + chr(39) + 's loss alone' if loss == 'ce' else 'dispersion added'}"
        out.append(f"{name} {direction} late-half condensation by {', '.join(f'{x:+.3f}' for x in d)} "
                   f"({len(d)} seed(s)); answer loss {', '.join(f'{x:.3f}' for x in losses)}, "
                   f"accuracy {', '.join(f'{a:.0%}' for a in acc)}.")
    if ("sft", "ce") in deltas and ("sft", "dispersion") in deltas:
        ce, disp = deltas[("sft", "ce")], deltas[("sft", "dispersion")]
        mean_ce, mean_disp = sum(ce) / len(ce), sum(disp) / len(disp)
        spread = max(ce) - min(ce)
        gap = abs(mean_ce) - abs(mean_disp)
        verdict = ("held condensation closer to the base model than SFT alone" if gap > 0 else
                   "did not hold condensation closer to the base model than SFT alone")
        size = "more" if abs(gap) > spread else "no more"
        noise = (f"{size} than the spread between the {len(ce)} ce seeds ({spread:.4f})" if len(ce) > 1
                 else "with one seed, no spread to compare it with")
        out.append(f"Dispersion {verdict}: mean change {mean_disp:+.4f} vs {mean_ce:+.4f}, a gap of {abs(gap):.4f}, "
                   f"{noise}.")
    return out


def _model_name(report: dict) -> str:
    if report["model_spec"] == "tiny":
        return "A tiny GPT-2 (4 blocks, width 64) pre-trained here first (150k tokens of builtin text and task rows)"
    return f"`{report['model_spec']}`"


def markdown(report: dict) -> str:
    runs, base = report["runs"], report["base"]
    header = ["layer", "base"] + [f"{r['objective']} {r['loss']} s{r['seed']}" for r in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for layer, value in enumerate(base["condensation"]):
        lines.append("| " + " | ".join([str(layer), f"{value:.3f}"] + [f"{r['after'][layer]:.3f}" for r in runs]) + " |")
    lines.append("| answer loss | " + " | ".join([f"{base['answer_loss']:.3f}"]
                                                 + [f"{r['answer_loss']:.3f}" for r in runs]) + " |")
    lines.append("| accuracy | " + " | ".join([f"{base['accuracy']:.0%}"] + [f"{r['accuracy']:.0%}" for r in runs]) + " |")
    s = report["settings"]
    meta = (f"`make posttrain` on {report['device']}, {report['wall_seconds'] / 60:.1f} min (load average "
            f"{report['load_average'][0]:.1f} at the start, {report['load_average_end'][0]:.1f} at the end: other "
            f"jobs shared the CPU). {_model_name(report)}: SFT {s['steps']} steps x 8 rows (lr {s['lr']}), GRPO "
            f"{s['grpo_steps']} steps (4 generations), dispersion lambda 0.1 on completion tokens; per-layer mean "
            f"cosine of {s['heldout']} held-out blocks of 128 tokens (0 = embeddings).")
    return "\n".join([meta, "", *lines, "", *(f"- {x}" for x in sentences(report))]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (pre-trained here first) or a model spec")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (tiny: 60, otherwise 12)")
    parser.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps (tiny: 20, otherwise 6)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=None, help="tiny: 5e-4, otherwise 5e-5")
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--output", default="results/posttrain")
    readme_flag(parser)
    args = parser.parse_args()
    tiny = args.model == "tiny"
    args.steps = args.steps or (60 if tiny else 12)
    args.grpo_steps = args.grpo_steps or (20 if tiny else 6)
    args.lr = args.lr or (5e-4 if tiny else 5e-5)
    started, load = time.time(), os.getloadavg()
    out = Path(args.output) / time.strftime("%Y%m%d-%H%M%S")
    data = write_data(out / "data", 256)
    spec = args.model
    if tiny:
        args.model = tiny_base(out, data["sft"])
    runs = [train("sft", loss, seed, data["sft"], out, args) for loss in ("ce", "dispersion")
            for seed in range(1, args.seeds + 1)]
    runs.append(train("grpo", "ce", 1, data["grpo"], out, args))
    base = {"condensation": runs[0]["before"], **task_metrics(args.model, args.problems)}
    report = {"device": device_name(), "load_average": load, "load_average_end": os.getloadavg(),
              "wall_seconds": round(time.time() - started, 1), "model_spec": spec, "settings": vars(args),
              "base": base, "runs": runs}
    report["conclusions"] = sentences(report)
    default = args.output == "results/posttrain"
    publish("posttrain", report, markdown(report),
            "results/bench/posttrain" if default else Path(args.output) / "summary", readme=args.readme)


if __name__ == "__main__":
    main()
