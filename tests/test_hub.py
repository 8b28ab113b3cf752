"""The hub path under test: the real huggingface_hub, transformers, datasets and lm-eval clients,
unmodified, talk to a small hub on 127.0.0.1 (`tests/hubserver.py`) serving a tiny GPT-2 repo
with two revisions and tiny parquet corpora under the ids lmdisp asks for (`tests/hubcontent.py`).

Each group of commands runs in one fresh process (`tests/hub_driver.py`) whose environment points
HF_ENDPOINT at the server, with its own HF cache, before the clients are imported. What the hub
path gives is checked against an independent computation: the same command on the same model
folder or parquet file read locally must give the same numbers, tokens and responses.

Faults (the server injects them): a connection dropped mid-file, 404 (unknown id, unknown
revision), 401 (gated), 500, a server slower than the client's timeout, a dataset without the
named field. Each must give one line (what failed, which id, what to do), exit 2, no traceback,
no partial file in the cache taken as complete, and a run after the fault is gone must succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hubcontent import BARE_MODEL, EVAL_DATASET, MODEL, NO_FIELD, populate  # noqa: E402
from hubserver import HubServer  # noqa: E402

MEASURE = ["-r", "2", "--max-length", "16", "--min-words", "40", "--max-words", "50", "--no-plots"]
TRAIN = ["--context-length", "32", "--batch-size", "2", "--grad-accum", "1", "--train-tokens", "256",
         "--no-gradient-checkpointing", "--condensation-every", "0", "--logging-steps", "1"]
CORPORA = {"wikipedia": ("wikitext-103-v1", "text"), "pubmed": ("qiaojin/PubMedQA", "long_answer"),
           "imdb": ("stanfordnlp/imdb", "text"), "squad": ("rajpurkar/squad", "context")}


def _tiny_gpt2(folder: Path, tokenizer, seed: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=256, bos_token_id=0,
                     eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tasks(folder: Path, local_data: Path) -> Path:
    """The same multiple-choice task twice: its data on the hub, and the same rows read locally."""
    import yaml

    folder.mkdir()
    for name, data in (("hub_cloze", {"dataset_path": EVAL_DATASET}),
                       ("local_cloze", {"dataset_path": "parquet",
                                        "dataset_kwargs": {"data_files": {"test": str(local_data)}}})):
        cfg = {"task": name, **data, "test_split": "test", "output_type": "multiple_choice",
               "doc_to_text": "{{text}}", "doc_to_choice": "{{choices}}", "doc_to_target": "label",
               "target_delimiter": " ", "metadata": {"version": 1.0},
               "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("hub")
    main = _tiny_gpt2(root / "main", tiny_tokenizer, seed=0)
    v2 = _tiny_gpt2(root / "v2", tiny_tokenizer, seed=1)
    (root / "local").mkdir()
    server = HubServer().start()
    files = populate(server, main, v2, root / "local")
    yield SimpleNamespace(server=server, root=root, main=main, v2=v2, files=files,
                          tasks=_tasks(root / "tasks", files["cloze"]))
    server.stop()


def drive(hub, name: str, steps: list[dict], timeouts: int | None = None) -> dict:
    """Run `steps` in one fresh process against the server; its own HF cache and lmdisp cache."""
    home = hub.root / name
    env = {**os.environ, "HF_ENDPOINT": hub.server.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "hf" / "ds"),
           "LMDISP_CACHE": str(home / "lmdisp"), "HF_HUB_DISABLE_XET": "1", "NO_PROXY": "127.0.0.1",
           "HF_TOKEN": "", "HF_HUB_DISABLE_TELEMETRY": "1", "no_proxy": "127.0.0.1",
           "HF_HUB_CACHE": str(home / "hf" / "hub")}
    for name in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        env.pop(name, None)  # the caller's own settings: the test's cache and timeouts only
    if timeouts:
        env.update(HF_HUB_ETAG_TIMEOUT=str(timeouts), HF_HUB_DOWNLOAD_TIMEOUT=str(timeouts))
    home.mkdir()
    (home / "steps.json").write_text(json.dumps(steps, default=str))
    driver = Path(__file__).parent / "hub_driver.py"
    try:  # under pytest-timeout's 300 s, so that a hang names its step
        proc = subprocess.run([sys.executable, str(driver), str(home / "steps.json"), str(home / "results.json")],
                              env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        done = json.loads((home / "results.json").read_text()) if (home / "results.json").is_file() else {}
        pytest.fail(f"hub steps still running after 240 s; finished: {list(done)}; next: "
                    f"{[s['name'] for s in steps if s['name'] not in done][:1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((home / "results.json").read_text())
    for step, res in results.items():
        res["home"] = home
    return results


def cos_by_layer(run: Path) -> dict[str, list[float]]:
    """Each measured model's mean cosine per layer, by the spec it was given as."""
    out = {}
    for summary in run.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        out[data["model"]] = data["mean_cos_by_layer"]
    return out


def shard_tokens(cache: Path, prefix: str) -> bytes:
    (folder,) = (cache / "tokens").glob(f"{prefix}-ctx32-*/blocks-*")
    return (folder / "tokens.bin").read_bytes()


# ----------------------------------------------------------------------------- the hub path

@pytest.fixture(scope="module")
def served(hub):
    """Every command on the hub path, and its local reference, in one process."""
    out = str(hub.root / "runs")
    models = [MODEL, f"{MODEL}@v2", BARE_MODEL, hub.main, hub.v2]
    steps = [{"name": "revisions", "argv": ["measure", *models, "--dataset", "builtin", *MEASURE, "--output",
                                            f"{out}/revisions"]}]
    for name, (key, field) in CORPORA.items():
        steps += [{"name": name, "argv": ["measure", MODEL, "--dataset", name, *MEASURE, "--output", f"{out}/{name}"]},
                  {"name": f"{name}-local", "argv": ["measure", hub.main, "--dataset", hub.files[key], "--text-field",
                                                     field, *MEASURE, "--output", f"{out}/{name}-local"]}]
    for name, key in (("wikitext", "wikitext-103-raw-v1"), ("fineweb-edu", "HuggingFaceFW/fineweb-edu")):
        # fineweb-edu's stream loses its connection once, mid-file: the client resumes it
        faults = [{"match": "/_lfs/", "method": "GET", "drop": 2000, "times": 1}] if name == "fineweb-edu" else []
        steps += [{"name": f"midtrain-{name}", "faults": faults,
                   "argv": ["midtrain", "--model", MODEL, "--dataset", name, *TRAIN, "--output", f"{out}/mid-{name}"]},
                  {"name": f"prepare-{name}-local", "argv": ["prepare", "--model", hub.main, "--dataset",
                                                             hub.files[key], *TRAIN[:2], "--train-tokens", "256"]}]
    steps.append({"name": "evaluate", "argv": ["evaluate", "--model", MODEL, "--tasks", "hub_cloze,local_cloze",
                                               "--include-path", hub.tasks, "--log-samples", "--output",
                                               f"{out}/evaluate"]})
    results = drive(hub, "served", steps)
    for name, res in results.items():
        assert res["code"] == 0, f"{name}: {res['err'][-3000:]}"
    return SimpleNamespace(results=results, runs=Path(out), cache=hub.root / "served" / "lmdisp")


def check_revisions(served, hub) -> None:
    cos = cos_by_layer(served.runs / "revisions")
    assert cos[MODEL] == cos[str(hub.main)]          # main: the weights of the main folder, read through the hub
    assert cos[f"{MODEL}@v2"] == cos[str(hub.v2)]    # @v2: that revision's weights
    assert cos[MODEL] != cos[f"{MODEL}@v2"]
    assert cos[BARE_MODEL] == cos[str(hub.main)]     # an id without an organisation (as `gpt2`)
    log = "\n".join(served.results["revisions"]["log"])
    assert f"/api/models/{MODEL}/revision/v2" in log and "/_lfs/" in log  # the revision asked for; LFS redirect


def check_corpus(served, name: str) -> None:
    hub_id = "Salesforce/wikitext" if name == "wikipedia" else CORPORA[name][0]
    assert cos_by_layer(served.runs / name)[MODEL] == \
        list(cos_by_layer(served.runs / f"{name}-local").values())[0], name  # same texts, field, numbers
    assert any(f"/datasets/{hub_id}/" in line for line in served.results[name]["log"]), name


def check_shards(served, hub, name: str) -> None:
    local = Path(hub.files["wikitext-103-raw-v1" if name == "wikitext" else "HuggingFaceFW/fineweb-edu"]).name
    tokens = shard_tokens(served.cache, name)
    assert len(tokens) == 16 * 32 * 2 and tokens == shard_tokens(served.cache, local), name
    assert (served.runs / f"mid-{name}" / "final" / "model.safetensors").is_file(), name


def check_evaluation(served) -> None:
    rows = {}
    for task in ("hub_cloze", "local_cloze"):
        lines = (served.runs / "evaluate" / "samples" / f"{task}.jsonl").read_text().splitlines()
        rows[task] = [(json.loads(s)["doc"], json.loads(s)["filtered_resps"]) for s in lines]
    assert len(rows["hub_cloze"]) == 16 and rows["hub_cloze"] == rows["local_cloze"]
    assert any(f"/datasets/{EVAL_DATASET}/" in line for line in served.results["evaluate"]["log"])


def test_the_hub_path_gives_what_the_same_files_give_locally(served, hub):
    """One test over one process's commands (a module fixture shared by several tests would run
    once per xdist worker): measure at two revisions, on the four paper corpora, midtrain on
    wikitext and fineweb-edu (whose stream is dropped once mid-file and resumed), evaluate."""
    check_revisions(served, hub)
    for name in CORPORA:
        check_corpus(served, name)
    for name in ("wikitext", "fineweb-edu"):
        check_shards(served, hub, name)
    assert served.results["midtrain-fineweb-edu"]["faults"] == 1  # the drop did happen
    check_evaluation(served)


# ----------------------------------------------------------------------------- faults

def _measure(model: str, out: str, *data: str) -> list[str]:
    return ["measure", model, *(data or ("--dataset", "builtin")), *MEASURE, "--output", out]


def _evaluate(hub, out: str) -> list[str]:
    return ["evaluate", "--model", MODEL, "--tasks", "hub_cloze", "--include-path", hub.tasks, "--output", out]


@pytest.fixture(scope="module")
def faulted(hub):
    """Each fault, then the same command with the fault gone, in one process (timeouts: 1 s)."""
    out = hub.root / "faulted-runs"
    gated = {"status": 401, "code": "GatedRepo", "message": "Access to model lmdisp-test/gated is restricted."}
    steps = [
        ("dropped", [{"match": "model.safetensors", "drop": 4000}], _measure(MODEL, f"{out}/dropped")),
        ("dropped-retry", [], ["measure", MODEL, hub.main, "--dataset", "builtin", *MEASURE, "--output",
                               f"{out}/dropped-retry"]),
        ("unknown-id", [], _measure("lmdisp-test/no-such-model", f"{out}/unknown-id")),
        ("unknown-revision", [], _measure(f"{MODEL}@no-such-branch", f"{out}/unknown-revision")),
        ("gated", [{"match": "lmdisp-test/gated", **gated}], _measure("lmdisp-test/gated", f"{out}/gated")),
        ("gated-retry", [], _measure("lmdisp-test/gated", f"{out}/gated-retry")),
        ("server-error", [{"match": "/_lfs/", "status": 500}], _measure("lmdisp-test/flaky", f"{out}/server-error")),
        ("server-error-retry", [], _measure("lmdisp-test/flaky", f"{out}/server-error-retry")),
        ("slow", [{"match": "/_lfs/", "method": "GET", "delay": 3}], _measure("lmdisp-test/slow", f"{out}/slow")),
        ("slow-retry", [], _measure("lmdisp-test/slow", f"{out}/slow-retry")),
        ("dataset-unknown", [], _measure(MODEL, f"{out}/dataset-unknown", "--dataset", "lmdisp-test/no-such-data",
                                         "--text-field", "text")),
        ("dataset-server-error", [{"match": "/_lfs/", "status": 500}],
         _measure(MODEL, f"{out}/dataset-server-error", "--dataset", "imdb")),
        ("dataset-retry", [], _measure(MODEL, f"{out}/dataset-retry", "--dataset", "imdb")),
        ("dataset-gated", [{"match": "qiaojin/PubMedQA", **gated}], _measure(MODEL, f"{out}/dataset-gated",
                                                                               "--dataset", "pubmed")),
        ("task-data-server-error", [{"match": "/_lfs/", "status": 500}],
         _evaluate(hub, f"{out}/task-data-server-error")),
        ("task-data-retry", [], _evaluate(hub, f"{out}/task-data-retry")),
        ("no-field", [], _measure(MODEL, f"{out}/no-field", "--dataset", NO_FIELD, "--text-field", "text")),
        ("no-field-streamed", [], ["midtrain", "--model", MODEL, "--dataset", NO_FIELD, "--text-field", "text", *TRAIN,
                                   "--output", f"{out}/no-field-streamed"]),
    ]
    results = drive(hub, "faulted", [{"name": n, "faults": f, "argv": a} for n, f, a in steps], timeouts=1)
    return SimpleNamespace(results=results, runs=out, hf=hub.root / "faulted" / "hf")


FAULTS = {  # step -> what its one line must say
    "dropped": ["`lmdisp-test/tiny-gpt2`", "cut off mid-file", "run the command again"],
    "unknown-id": ["`lmdisp-test/no-such-model`", "no such model", "check the id"],
    "unknown-revision": ["`lmdisp-test/tiny-gpt2@no-such-branch`", "no revision `no-such-branch`", "branches"],
    "gated": ["`lmdisp-test/gated`", "gated", "request access", "hf auth login"],
    "server-error": ["`lmdisp-test/flaky`", "answered 500", "again later"],
    "slow": ["`lmdisp-test/slow`", "did not answer in time", "HF_HUB_DOWNLOAD_TIMEOUT=1s", "raise those variables"],
    "dataset-unknown": ["`lmdisp-test/no-such-data`", "no such dataset", "check the id"],
    "dataset-server-error": ["`imdb` (`stanfordnlp/imdb`)", "answered 500", "again later"],
    "dataset-gated": ["`pubmed` (`qiaojin/PubMedQA`)", "gated", "request access"],
    "task-data-server-error": ["task `hub_cloze`", f"dataset `{EVAL_DATASET}`", "answered 500", "again later"],
    "no-field": [f"`{NO_FIELD}`", "no text field `text`", "columns: question, answer", "--text-field"],
    "no-field-streamed": [f"`{NO_FIELD}`", "no text field `text`", "columns: question, answer", "--text-field"],
}


def check_one_line(faulted, hub, step: str) -> None:
    res = faulted.results[step]
    line = res["err"].strip()
    assert res["code"] == 2 and "Traceback" not in res["err"], f"{step}: {res['err'][-3000:]}"
    assert len(line.splitlines()) == 1 and line.startswith("error: "), f"{step}: {line}"
    assert all(needle in line for needle in FAULTS[step]), f"{step}: {line}"
    assert hub.server.url in line or step.startswith("no-field"), f"{step}: {line}"  # which hub it asked
    assert (res["faults"] >= 1) == (step not in NO_FAULT), step  # the fault injected did happen
    assert res["requests"] < 60, f"{step}: {res['log']}"  # bounded: no retry storm
    done = [*(faulted.runs / step).glob("**/summary.json"), *(faulted.runs / step).glob("**/tasks.csv")]
    assert not done, step  # no result claims to be complete


def check_partial_file_unused(faulted, hub) -> None:
    """Weights that arrived in part are never in the cache as a file a later run would read
    (a snapshot entry or a complete-looking blob); the retry fetches them whole, and the model
    measured is exactly the one served."""
    repo = "hub/models--lmdisp-test--tiny-gpt2"
    served_sizes = {p.stat().st_size for p in hub.main.iterdir()}
    size = (hub.main / "model.safetensors").stat().st_size
    after_drop = faulted.results["dropped"]["cache"]
    assert not [f for f in after_drop if f.startswith(f"{repo}/snapshots/") and f.endswith("model.safetensors")]
    blobs = {f: s for f, s in after_drop.items() if f.startswith(f"{repo}/blobs/") and not f.endswith(".incomplete")}
    assert blobs and set(blobs.values()) <= served_sizes - {size}  # the small files only, each whole
    after_retry = faulted.results["dropped-retry"]["cache"]
    assert [s for f, s in after_retry.items() if f.startswith(f"{repo}/snapshots/") and f.endswith("model.safetensors")]
    assert size in after_retry.values() and not [f for f in after_retry if f.endswith(".incomplete")]
    cos = cos_by_layer(faulted.runs / "dropped-retry")
    assert cos[MODEL] == cos[str(hub.main)]


def check_retry(faulted, step: str) -> None:
    retry = f"{step}-retry" if not step.startswith("dataset") else "dataset-retry"
    assert faulted.results[retry]["code"] == 0, f"{retry}: {faulted.results[retry]['err'][-3000:]}"
    cos = cos_by_layer(faulted.runs / retry)
    assert cos and all(0 < c < 1 for c in list(cos.values())[0]), retry


NO_FAULT = ("unknown-id", "unknown-revision", "dataset-unknown", "no-field", "no-field-streamed")


def test_each_hub_fault_is_one_line_and_a_retry_succeeds(faulted, hub):
    for step in FAULTS:
        check_one_line(faulted, hub, step)
    check_partial_file_unused(faulted, hub)
    for step in ("dropped", "gated", "server-error", "slow", "dataset-server-error"):
        check_retry(faulted, step)
    retried = faulted.results["task-data-retry"]
    assert retried["code"] == 0 and (faulted.runs / "task-data-retry" / "tasks.csv").is_file(), retried["err"][-3000:]
    assert faulted.results["slow"]["seconds"] < 40  # 1 s timeout, then the client's 5 resumes with 1 s pauses
