"""What the test hub (`tests/hubserver.py`) serves: a tiny GPT-2 repo with two revisions and
tiny parquet datasets shaped like the paper's corpora, under the hub ids lmdisp asks for
(`lmdisp.data.PAPER_CORPORA`, `TRAIN_CORPORA`). Each corpus is also written as a local parquet
file, the independent reference the hub path must reproduce."""

from __future__ import annotations

import io
import re
from pathlib import Path

MODEL = "lmdisp-test/tiny-gpt2"
BARE_MODEL = "tiny-gpt2"  # an id without an organisation, as `gpt2` is
EVAL_DATASET = "lmdisp-test/cloze"
FAULT_MODELS = ("lmdisp-test/gated", "lmdisp-test/flaky", "lmdisp-test/slow")
NO_FIELD = "lmdisp-test/no-text"
NOTE = "Test-only hub content for lmdisp (tests/hubcontent.py)."


def _paragraphs(start: int, n: int, words: int = 70) -> list[str]:
    """`n` passages of about `words` words from the builtin corpus, from passage `start` on."""
    from lmdisp.data import load_corpus

    corpus = load_corpus("builtin")
    text = " ".join(corpus[i] for i in range(len(corpus)))
    tokens = [w for w in re.split(r"\s+", text) if re.fullmatch(r"[A-Za-z][A-Za-z,.']*", w)]
    return [" ".join(tokens[(start + i) * words:(start + i + 1) * words]) for i in range(n)]


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _card(configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose YAML names each config's data files per split (what datasets reads)."""
    lines = ["---", "configs:"]
    for i, (name, splits) in enumerate(configs.items()):
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
        if i == 0:
            lines.append("  default: true")
    return ("\n".join(lines) + f"\n---\n{NOTE}\n").encode()


def corpora() -> dict[str, dict]:
    """hub id -> {config: (path in repo, columns)}; the texts differ between corpora."""
    wiki = _paragraphs(0, 30)
    raw = _paragraphs(30, 30)
    return {
        "Salesforce/wikitext": {
            "wikitext-103-v1": ("wikitext-103-v1/train-00000-of-00001.parquet",
                                {"text": [" = Heading = ", "", *wiki]}),
            "wikitext-103-raw-v1": ("wikitext-103-raw-v1/train-00000-of-00001.parquet",
                                    {"text": ["", *raw, ""]}),
        },
        "qiaojin/PubMedQA": {
            "pqa_labeled": ("pqa_labeled/train-00000-of-00001.parquet", {
                "pubid": list(range(30)), "question": [p[:60] + "?" for p in _paragraphs(60, 30, 12)],
                "context": [{"contexts": [c], "labels": ["BACKGROUND"]} for c in _paragraphs(90, 30)],
                "long_answer": _paragraphs(120, 30), "final_decision": ["yes"] * 30}),
        },
        "stanfordnlp/imdb": {
            "plain_text": ("plain_text/train-00000-of-00001.parquet",
                           {"text": _paragraphs(150, 30), "label": [i % 2 for i in range(30)]}),
        },
        "rajpurkar/squad": {
            "plain_text": ("plain_text/train-00000-of-00001.parquet", {
                "id": [str(i) for i in range(30)], "title": ["t"] * 30, "context": _paragraphs(180, 30),
                "question": [p for p in _paragraphs(210, 30, 10)],
                "answers": [{"text": ["a"], "answer_start": [0]}] * 30}),
        },
        "HuggingFaceFW/fineweb-edu": {
            "sample-10BT": ("sample/10BT/000_00000.parquet",
                            {"text": _paragraphs(240, 30), "id": [f"<urn:{i}>" for i in range(30)],
                             "score": [3.0] * 30}),
        },
    }


def cloze_rows() -> list[dict]:
    """The evaluation task's documents: which word follows the passage."""
    rows = []
    for p in _paragraphs(270, 16, 20):
        words = p.split()
        choices = [words[-1], "the", "of", "and"]
        rows.append({"text": " ".join(words[:-1]), "choices": choices, "label": 0})
    return rows


def model_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def populate(server, main_dir: Path, v2_dir: Path, local: Path) -> dict[str, Path]:
    """Fill the server; write each corpus's parquet under `local`. Returns corpus name -> file."""
    model = server.repo("model", MODEL)
    model.commit(model_files(main_dir), "main")
    model.commit(model_files(v2_dir), "v2")
    for copy in (BARE_MODEL, *FAULT_MODELS):  # one repo per fault: a model cached by an earlier step would hide it
        server.repo("model", copy).commit(model_files(main_dir), "main")
    files = {}
    for hub_id, configs in corpora().items():
        repo_files = {"README.md": _card({c: {"train": path} for c, (path, _) in configs.items()})}
        for config, (path, columns) in configs.items():
            repo_files[path] = _parquet(columns)
            key = config if hub_id == "Salesforce/wikitext" else hub_id  # wikitext: one file per config
            files[key] = local / f"{config}-{hub_id.split('/')[1]}.parquet"
            files[key].write_bytes(repo_files[path])
        server.repo("dataset", hub_id).commit(repo_files)
    rows = cloze_rows()
    cloze = _parquet({k: [r[k] for r in rows] for k in rows[0]})
    server.repo("dataset", EVAL_DATASET).commit({"README.md": _card({"default": {"test": "data/test-*.parquet"}}),
                                                 "data/test-00000-of-00001.parquet": cloze})
    server.repo("dataset", NO_FIELD).commit({
        "README.md": _card({"default": {"train": "data/train-*.parquet"}}),
        "data/train-00000-of-00001.parquet": _parquet({"question": _paragraphs(300, 20), "answer": ["yes"] * 20})})
    files["cloze"] = local / "cloze.parquet"
    files["cloze"].write_bytes(cloze)
    return files
