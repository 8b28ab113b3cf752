"""The authors' packing (docs/fidelity.md D2) and TorchTitan's per-document BOS/EOS (P5) as
token-shard options, each equal to a direct implementation; both are part of the cache key."""

import json

import numpy as np
import pytest

from lmdisp.errors import DataError
from lmdisp.train.shards import Packing, cache_key, prepare_shards, resolve_source


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["condensation", "the", "embedding", "of", "layers", "cosine", "token", "dispersion"]
    return ["" if i % 7 == 3 else "  " if i % 11 == 5 else " ".join(rng.choice(words, size=int(rng.integers(1, 30))))
            for i in range(n)]


def _authors_group_texts(tokenizer, records, ctx, batch=1000):
    """midtrain_gpt2.py's make_splits, written out: blank records filtered, then per map batch
    of 1000 records their ids concatenated and cut to a multiple of ctx (the tail dropped)."""
    kept = [r for r in records if r and r.strip()]
    blocks = []
    for start in range(0, len(kept), batch):
        ids = [t for r in kept[start:start + batch] for t in tokenizer(r, add_special_tokens=False)["input_ids"]]
        total = len(ids) // ctx * ctx
        blocks += [ids[i:i + ctx] for i in range(0, total, ctx)]
    return np.array(blocks, dtype=np.int64)


def _corpus(tmp_path, records):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    return resolve_source(str(path))


def _blocks(shards):
    return shards.blocks(0, shards.n_blocks)[:]["input_ids"].numpy()


def test_per_1000_packing_equals_the_authors_group_texts(tmp_path, tiny_tokenizer):
    records = _records(2600)  # three map batches, the last one short
    src, ctx = _corpus(tmp_path, records), 24
    expected = _authors_group_texts(tiny_tokenizer, records, ctx)
    shards = prepare_shards(src, tiny_tokenizer, ctx, 10**6, cache_dir=tmp_path / "c", packing=Packing("per-1000"))
    np.testing.assert_array_equal(_blocks(shards), expected)
    continuous = prepare_shards(src, tiny_tokenizer, ctx, 10**6, cache_dir=tmp_path / "c")
    assert continuous.path != shards.path                     # its own cache entry
    cont, per = _blocks(continuous), _blocks(shards)
    first = sum(len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"])
                for r in [r for r in records if r.strip()][:1000]) // ctx   # blocks of the first map batch
    np.testing.assert_array_equal(cont[:first], per[:first])
    assert not np.array_equal(cont[first:first + 10], per[first:first + 10])  # after the first dropped tail
    # A budget inside the corpus stops at the budget, on the same blocks.
    part = prepare_shards(src, tiny_tokenizer, ctx, 50, cache_dir=tmp_path / "d", packing=Packing("per-1000"))
    np.testing.assert_array_equal(_blocks(part), expected[:50])


def test_bos_eos_wraps_every_record_as_torchtitans_loader(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    records = _records(300, seed=1)
    src, ctx = _corpus(tmp_path, records), 16
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert eos is not None
    # hf_datasets.py: tokenizer.encode(text, add_bos=True, add_eos=True), one buffer, cut in windows.
    stream = [t for r in records if r and r.strip()
              for t in [*([bos] if bos is not None else []), *tok(r, add_special_tokens=False)["input_ids"], eos]]
    n = len(stream) // ctx
    expected = np.array(stream[: n * ctx], dtype=np.int64).reshape(n, ctx)
    shards = prepare_shards(src, tok, ctx, 10**6, cache_dir=tmp_path / "c", packing=Packing(doc_tokens="bos-eos"))
    np.testing.assert_array_equal(_blocks(shards), expected)


def test_the_packing_is_in_the_cache_key_and_the_default_key_is_unchanged(tmp_path, tiny_tokenizer):
    src = _corpus(tmp_path, _records(10))
    keys = {p: cache_key(src, tiny_tokenizer, 16, p)[0] for p in
            (Packing(), Packing("per-1000"), Packing(doc_tokens="bos-eos"), Packing("per-1000", "bos-eos"))}
    assert len(set(keys.values())) == 4
    assert cache_key(src, tiny_tokenizer, 16)[1] == cache_key(src, tiny_tokenizer, 16, Packing())[1]
    assert "packing" not in cache_key(src, tiny_tokenizer, 16)[1]  # caches built before the option stay valid


def test_bos_eos_uses_the_tokenizers_own_tokens():
    from types import SimpleNamespace as NS

    wrap = Packing(doc_tokens="bos-eos").wrap
    assert wrap(NS(bos_token_id=None, eos_token_id=151645)) == ([], [151645])  # Qwen3: no BOS, EOS <|im_end|>
    assert wrap(NS(bos_token_id=50256, eos_token_id=50256)) == ([50256], [50256])  # GPT-2
    assert Packing().wrap(NS(bos_token_id=1, eos_token_id=2)) == ([], [])
    with pytest.raises(DataError, match="no EOS token"):
        wrap(NS(bos_token_id=None, eos_token_id=None))
