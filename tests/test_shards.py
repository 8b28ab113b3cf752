"""Token shards: equal to a direct tokenisation, stop at the budget, reused, never half-used."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmdisp.errors import DataError
from lmdisp.train.config import TrainConfig
from lmdisp.train.shards import find_shards, prepare_shards, resolve_source, token_dtype

REPO = Path(__file__).resolve().parent.parent
TINY = dict(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=4, grad_accum=1,
            lr=1e-3, gradient_checkpointing=False, condensation_every=0, logging_steps=1, save_steps=1000,
            warmup_ratio=0.0)


def _direct(tokenizer, records, ctx):
    """Independent packing: every non-blank record tokenised alone, concatenated, cut."""
    ids = [t for r in records if r and r.strip() for t in tokenizer(r, add_special_tokens=False)["input_ids"]]
    n = len(ids) // ctx
    return np.array(ids[: n * ctx], dtype=np.int64).reshape(n, ctx)


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["condensation", "the", "embedding", "of", "layers", "cosine", "token", "dispersion", "é", "数据"]
    out = []
    for i in range(n):
        out.append("" if i % 7 == 3 else "   " if i % 11 == 5 else
                   " ".join(rng.choice(words, size=int(rng.integers(1, 40)))) + f" #{i}.")
    return out


def _all_blocks(shards):
    return shards.blocks(0, shards.n_blocks)[:]["input_ids"].numpy()


@pytest.mark.parametrize("fmt", ["jsonl", "txt", "parquet", "json"])
def test_shards_equal_a_direct_tokenisation(tmp_path, tiny_tokenizer, fmt):
    records = _records(300)
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"body": r}) + "\n" for r in records))
    elif fmt == "json":
        path.write_text(json.dumps([{"body": r} for r in records]))
    elif fmt == "txt":
        path.write_text("".join(r + "\n" for r in records))
    else:
        import pandas as pd

        pd.DataFrame({"body": records}).to_parquet(path, row_group_size=50)
    src = resolve_source(str(path), text_field="body")
    shards = prepare_shards(src, tiny_tokenizer, 16, 10**6, cache_dir=tmp_path / "cache")
    expected = _direct(tiny_tokenizer, records, 16)
    assert shards.exhausted and shards.n_blocks == len(expected) > 50
    np.testing.assert_array_equal(_all_blocks(shards), expected)
    assert shards.index["dtype"] == "uint16"
    assert (shards.path / "tokens.bin").stat().st_size == expected.size * 2  # 2 bytes per token kept
    item = shards.blocks(3, 9)[2]
    np.testing.assert_array_equal(item["input_ids"].numpy(), expected[5])
    assert item["attention_mask"].sum() == 16 and (item["labels"] == item["input_ids"]).all()


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["[UNK]"] = 70_000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    records = [" ".join(f"w{(i * 7919 + j * 104729) % 70_000}" for j in range(i % 13 + 1)) for i in range(400)]
    (tmp_path / "c.txt").write_text("\n".join(records))
    assert token_dtype(tokenizer) == np.uint32
    shards = prepare_shards(resolve_source(str(tmp_path / "c.txt")), tokenizer, 8, 10**6, cache_dir=tmp_path / "c")
    assert shards.index["dtype"] == "uint32" and _all_blocks(shards).max() > 65_535
    np.testing.assert_array_equal(_all_blocks(shards), _direct(tokenizer, records, 8))


def test_the_build_stops_at_the_budget_and_a_longer_build_extends_it(tmp_path, tiny_tokenizer):
    records = _records(20_000)
    (tmp_path / "big.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    src = resolve_source(str(tmp_path / "big.jsonl"))
    small = prepare_shards(src, tiny_tokenizer, 32, 20, cache_dir=tmp_path / "c")
    assert small.built and small.n_blocks == 20 and not small.exhausted
    assert small.index["records_read"] < len(records) // 10  # stopped early, did not read the corpus
    again = prepare_shards(src, tiny_tokenizer, 32, 15, cache_dir=tmp_path / "c")
    assert not again.built and again.path == small.path
    bigger = prepare_shards(src, tiny_tokenizer, 32, 400, cache_dir=tmp_path / "c")
    assert bigger.built and bigger.n_blocks == 400
    np.testing.assert_array_equal(_all_blocks(bigger)[:20], _all_blocks(small))  # a prefix
    np.testing.assert_array_equal(_all_blocks(bigger), _direct(tiny_tokenizer, records[:3000], 32)[:400])


def test_another_seed_or_loss_builds_nothing_and_the_key_sees_what_matters(tmp_path, tiny_tokenizer):
    from lmdisp.train.run import prepare_data

    cache = str(tmp_path / "cache")
    base = dict(TINY, train_tokens=64 * 32, cache_dir=cache, condensation_sequences=4)
    first, held, n_train = prepare_data(TrainConfig(**base), tiny_tokenizer)
    assert first.built and (held, n_train) == (4, 64)
    for change in ({"seed": 7}, {"loss": "dispersion", "lambda_disp": 0.5}, {"train_tokens": 10 * 32}):
        shards, _, _ = prepare_data(TrainConfig(**{**base, **change}), tiny_tokenizer)
        assert not shards.built and shards.path == first.path, change
    other, _, _ = prepare_data(TrainConfig(**{**base, "context_length": 16}), tiny_tokenizer)
    assert other.built and other.path.parent != first.path.parent
    f = tmp_path / "c.txt"
    f.write_text("one line of text that is long enough to fill a block of tokens\n" * 50)
    a, _, _ = prepare_data(TrainConfig(**{**base, "dataset": str(f), "train_tokens": 64}), tiny_tokenizer)
    f.write_text("another text altogether, with other words in it, long enough too\n" * 50)
    b, _, _ = prepare_data(TrainConfig(**{**base, "dataset": str(f), "train_tokens": 64}), tiny_tokenizer)
    assert b.built and b.path.parent != a.path.parent  # an edited file is another corpus


def test_held_out_blocks_come_first_and_never_train(tmp_path, tiny_tokenizer):
    from lmdisp.train.run import build_data

    cfg = TrainConfig(**{**TINY, "train_tokens": 40 * 32, "condensation_every": 5, "condensation_sequences": 3,
                         "cache_dir": str(tmp_path / "c")})
    train, heldout = build_data(cfg, tiny_tokenizer)
    expected = _direct(tiny_tokenizer, _builtin_records(), 32)
    np.testing.assert_array_equal(heldout["input_ids"].numpy(), expected[:3])
    np.testing.assert_array_equal(train[:]["input_ids"].numpy(), expected[3:43])
    assert len(train) == 40


def _builtin_records():
    import pydoc_data.topics as topics

    return [topics.topics[k] for k in sorted(topics.topics)]


def test_an_empty_corpus_and_a_missing_field_are_clear_errors(tmp_path, tiny_tokenizer):
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="no non-empty text"):
        prepare_shards(resolve_source(str(tmp_path / "empty.txt")), tiny_tokenizer, 8, 5, cache_dir=tmp_path / "c")
    (tmp_path / "x.jsonl").write_text('{"body": "a b c"}\n')
    with pytest.raises(DataError, match=r"x.jsonl, line 1: no `text` field \(keys: body\)"):
        prepare_shards(resolve_source(str(tmp_path / "x.jsonl")), tiny_tokenizer, 8, 5, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="cannot load dataset `wikitext`.*builtin"):  # offline: the hub path
        prepare_shards(resolve_source("wikitext"), tiny_tokenizer, 8, 5, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())  # nothing left behind


_KILLED_BUILD = """
import sys, time
from pathlib import Path
from lmdisp.models import load_tokenizer
from lmdisp.train.shards import prepare_shards, resolve_source

marker = Path(sys.argv[3])
def progress(report):
    if report["tokens"] > 0:
        marker.write_text(str(report["tokens"]))
        time.sleep(600)  # killed here, in the middle of the build
prepare_shards(resolve_source(sys.argv[1]), load_tokenizer("tiny-bpe"), 32, 10**9, cache_dir=sys.argv[2],
               progress=progress)
"""


def test_a_killed_build_leaves_no_usable_partial_cache(tmp_path, tiny_tokenizer):
    records = _records(3000)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    cache, marker = tmp_path / "cache", tmp_path / "started"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(tmp_path / "c.jsonl"), str(cache), str(marker)],
                            env=env, cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (folder,) = list(cache.iterdir())
    (partial,) = list(folder.glob(".tmp-*"))
    assert (partial / "tokens.bin").stat().st_size > 0   # tokens were written ...
    assert find_shards(folder, 1) is None                 # ... but nothing usable is there
    src = resolve_source(str(tmp_path / "c.jsonl"))
    shards = prepare_shards(src, tiny_tokenizer, 32, 10**9, cache_dir=cache)
    assert shards.built and not partial.exists()           # rebuilt; the dead build's folder cleared
    np.testing.assert_array_equal(_all_blocks(shards), _direct(tiny_tokenizer, records, 32))


@pytest.mark.slow
def test_a_tokenizer_pool_gives_the_same_shards(tmp_path, tiny_tokenizer):
    records = _records(6000, seed=3)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    src = resolve_source(str(tmp_path / "c.jsonl"))
    pooled = prepare_shards(src, tiny_tokenizer, 32, 10**9, cache_dir=tmp_path / "a", num_proc=2)
    np.testing.assert_array_equal(_all_blocks(pooled), _direct(tiny_tokenizer, records, 32))


_READ_BLOCKS = """
import json, os, sys
from pathlib import Path
from transformers import default_data_collator
from lmdisp.models import load_model, load_tokenizer
from lmdisp.train.config import TrainConfig
from lmdisp.train.run import _dist_state, build_data, training_arguments
from lmdisp.train.trainer import DispersionTrainer

out, batch = Path(sys.argv[1]), int(sys.argv[2])
state = _dist_state()
cfg = TrainConfig(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=batch, grad_accum=1,
                  train_tokens=16 * 4 * 32, condensation_every=0, gradient_checkpointing=False, seed=3,
                  cache_dir=sys.argv[3])
train, _ = build_data(cfg, load_tokenizer("tiny-bpe"))
steps = cfg.max_steps(state.num_processes)
model = load_model(cfg.model, device="cpu", lm_head=True, seed=0).model
trainer = DispersionTrainer(model=model, args=training_arguments(cfg, out, steps, state.num_processes),
                            train_dataset=train, data_collator=default_data_collator, run_config=cfg)
seen = [b["input_ids"][:, :4].tolist() for _, b in zip(range(steps), trainer.get_train_dataloader())]
(out / f"rank{state.process_index}.json").write_text(json.dumps(seen))
"""


@pytest.mark.slow
def test_two_processes_read_disjoint_blocks_that_make_the_one_process_batches(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    script = tmp_path / "read_blocks.py"
    script.write_text(_READ_BLOCKS)
    cache = tmp_path / "cache"
    for name, cmd in (("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]),
                      ("one", [sys.executable, str(script)])):
        (tmp_path / name).mkdir()
        batch = "2" if name == "two" else "4"
        res = subprocess.run([*cmd, str(tmp_path / name), batch, str(cache)], env=env, cwd=REPO,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(cache.glob("*/blocks-*"))) == 1  # the two processes and the third built one cache
    r0, r1 = (json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1))
    (one,) = [json.loads((tmp_path / "one" / "rank0.json").read_text())]
    keys = lambda rows: [tuple(r) for r in rows]  # noqa: E731
    flat0 = [k for step in r0 for k in keys(step)]
    flat1 = [k for step in r1 for k in keys(step)]
    assert len(flat0) == len(flat1) == 32 and not set(flat0) & set(flat1)  # disjoint
    for s in range(len(one)):  # each global batch is the one-process batch of the same step
        assert sorted(keys(r0[s]) + keys(r1[s])) == sorted(keys(one[s]))


def test_prepare_builds_what_a_training_run_then_reads(run_cli, tmp_path, monkeypatch):
    """Without cache_dir, shards go under $LMDISP_CACHE/tokens, where the training run finds them."""
    monkeypatch.setenv("LMDISP_CACHE", str(tmp_path))
    cache = tmp_path / "tokens"
    flags = ["--model", "random:tiny-gpt2", "--dataset", "builtin", "--train-tokens", str(6 * 128),
             "--context-length", "32"]
    res = run_cli("prepare", *flags)
    assert res.code == 0 and "built 32 blocks" in res.out.replace("\n", " "), res.out + res.err
    (built,) = list(cache.glob("*/blocks-*"))
    res = run_cli("prepare", *flags)  # again: found, not built
    assert res.code == 0 and "found" in res.out
    res = run_cli("midtrain", *flags, "--batch-size", "4", "--grad-accum", "1", "--no-gradient-checkpointing",
                  "--condensation-every", "0", "--output", tmp_path / "run")
    assert res.code == 0, res.err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert Path(manifest["data"]["token_file"]).parent == built
    assert list(tmp_path.rglob("blocks-*")) == [built]  # nothing built anywhere else
    assert manifest["data"]["first_block"] == 8 and manifest["data"]["train_blocks"] == 24
    assert manifest["learning_rate_rule"].startswith("lr 5e-05 x sqrt(world size 1)")
    # a training config is read as it is (its loss, lr, ... are not data fields and are ignored)
    res = run_cli("prepare", "--config", "tiny-dispersion", "--set", f"cache_dir={cache}")
    assert res.code == 0, res.err
    res = run_cli("prepare", *flags, "--set", "cache_dir=/nonexistent/x", "--dataset", "nope.jsonl")
    assert res.code == 2 and "not found" in res.err and "Traceback" not in res.err


def test_prepare_options_come_from_its_config(monkeypatch, run_cli, tmp_path):
    """Every data setting is a prepare option with its default shown, defined once (TrainConfig
    extends DataConfig), and what prepare is given is what it builds."""
    import tests.test_architecture as arch
    from lmdisp.train.data_config import DataConfig

    monkeypatch.setitem(arch.CONFIGS, "prepare", DataConfig)
    arch.test_every_field_is_reachable_and_help_shows_its_default("prepare")
    assert issubclass(TrainConfig, DataConfig)  # the same options as the training commands', one definition
    res = run_cli("prepare", "--model", "random:tiny-gpt2", "--dataset", "builtin", "--train-tokens", "768",
                  "--context-length", "16", "--set", f"cache_dir={tmp_path}")
    assert res.code == 0, res.err
    (index,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/blocks-*/index.json")]
    assert index["context_length"] == 16 and index["n_blocks"] == 768 // 16 + 8  # + the 8 held-out blocks
