"""Offline evaluation data for the mini and smoke plans: lm-eval task YAMLs over documents
generated from the builtin corpus (CPython's pydoc topics, present on every machine).

- `mini_cloze` (zero-shot, multiple choice): a 24-word passage; which word comes next, the
  true one or three frequent corpus words (LAMBADA-like, scored as choice accuracy);
- `mini_next` (zero-shot, multiple choice): which 6-word continuation follows the passage;
- `mini_cloze_1shot`: `mini_cloze` with one example shot (the paper's few-shot group).
`preset.yaml` next to them is an `lmdisp evaluate --config` preset (metric `acc`, limit).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

TASKS = {"mini_cloze": 0, "mini_next": 0, "mini_cloze_1shot": 1}
N_DOCS = 120


def _passages(words_per: int = 30) -> list[list[str]]:
    from lmdisp.data import load_corpus

    out = []
    corpus = load_corpus("builtin")
    for text in (corpus[i] for i in range(len(corpus))):
        words = [w for w in re.split(r"\s+", text) if re.fullmatch(r"[A-Za-z][A-Za-z,.']*", w)]
        for start in range(0, len(words) - words_per, words_per * 3):
            out.append(words[start:start + words_per])
    return out


def documents(seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    passages = _passages()
    rng.shuffle(passages)
    vocab = [w for w, _ in Counter(w.strip(",.").lower() for p in passages for w in p).most_common(300)]
    cloze, nxt = [], []
    for i, p in enumerate(passages[:N_DOCS]):
        answer = p[24].strip(",.")
        wrong = rng.sample([w for w in vocab if w != answer.lower()], 3)
        choices = [answer, *wrong]
        rng.shuffle(choices)
        cloze.append({"text": " ".join(p[:24]), "choices": choices, "label": choices.index(answer)})
        others = [" ".join(passages[(i + k * 7 + 1) % len(passages)][24:30]) for k in range(1, 4)]
        options = [" ".join(p[24:30]), *others]
        rng.shuffle(options)
        nxt.append({"text": " ".join(p[:24]), "choices": options, "label": options.index(" ".join(p[24:30]))})
    return {"cloze": cloze, "next": nxt}


def write_tasks(folder: Path, limit: int = 100) -> Path:
    """Write the data, the task YAMLs and `preset.yaml` into `folder`; returns the preset."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    docs = documents()
    for name, rows in docs.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for task, shots in TASKS.items():
        data = "next" if task == "mini_next" else "cloze"
        cfg = {"task": task, "dataset_path": "json", "test_split": "test", "fewshot_split": "test",
               "dataset_kwargs": {"data_files": {"test": str((folder / f"{data}.jsonl").resolve())}},
               "output_type": "multiple_choice", "doc_to_text": "{{text}}", "doc_to_choice": "{{choices}}",
               "doc_to_target": "label", "target_delimiter": " ", "metadata": {"version": 1.0},
               "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    preset = {"include_path": [str(folder.resolve())], "limit": limit,
              "tasks": {t: {"num_fewshot": s, "metric": "acc"} for t, s in TASKS.items()}}
    (folder / "preset.yaml").write_text("# Offline tasks of the mini/smoke paper plans (lmdisp.paper.tasks)\n"
                                        + yaml.safe_dump(preset, sort_keys=False))
    return folder / "preset.yaml"
