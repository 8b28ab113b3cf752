"""Parity of `--dataset` sampling with the authors' package: lmdisp's texts, tokenised inputs
and mean matrices equal those of `embedding_condensation.get_random_long_text` /
`measure_embedding_condensation(dataset=...)` on the same corpus (docs/fidelity.md M3).

The authors' sampling loop is run unchanged from the installed package, with two stand-ins
(monkeypatched inside `embedding_condensation` only):
- `load_dataset` returns our in-memory corpus instead of fetching wikitext/squad from the hub;
- `word_tokenize` (NLTK, which needs a download) is replaced by lmdisp's own whitespace
  counter, the same counter on both sides, so the stopping rule is compared like for like.
The corpus reaches lmdisp through `--dataset <file.jsonl>` (`prepare_texts`), the code path
of `lmdisp measure --dataset`. Two corpus shapes: wikitext-shaped (headings, empty and
whitespace-only records, paragraphs ending in " \\n") and plain records with no trailing
whitespace (the authors glue them: "...end.Next"). Offline; a few seconds.
"""

import json

import numpy as np
import pytest

import embedding_condensation as ec
from lmdisp.data import _WORD, count_words, load_corpus
from lmdisp.measure.config import MeasureConfig
from lmdisp.measure.run import measure_model, prepare_texts
from lmdisp.models import load_model

MIN_WORDS, MAX_WORDS, MAX_LENGTH, REPS, SEEDS = 150, 190, 64, 4, 20


def _sentences(n: int, rng: np.random.Generator, vocab: list[str]) -> list[str]:
    return [" ".join(rng.choice(vocab, size=int(rng.integers(4, 30)))) + "." for _ in range(n)]


def _wikitext_shaped(vocab: list[str]) -> list[str]:
    rng = np.random.default_rng(0)
    records = []
    for k, para in enumerate(_sentences(300, rng, vocab)):
        if k % 5 == 0:
            records += ["", f" = Heading {k} = \n", ""]
        records.append(f" {para} \n")
        if k % 7 == 3:
            records.append(" \n")   # whitespace-only
        if k % 11 == 5:
            records.append("   ")   # whitespace-only, no newline
        if k % 13 == 2:
            records.append("")      # a lone empty record
    return records


def _plain(vocab: list[str]) -> list[str]:
    return _sentences(400, np.random.default_rng(1), vocab)  # no trailing whitespace: glued


CORPORA = {"wikipedia": ("text", _wikitext_shaped), "squad": ("context", _plain)}


@pytest.fixture(scope="module")
def vocab():
    builtin = load_corpus("builtin")
    return sorted({w for i in range(20) for w in _WORD.findall(builtin[i]) if w.isalpha()})[:500]


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny-gpt2", dtype="float32", device="cpu")


@pytest.fixture(params=list(CORPORA))
def case(request, vocab, tmp_path, monkeypatch):
    """(authors' dataset name, records, our MeasureConfig over a .jsonl of the same records)."""
    name = request.param
    key, make = CORPORA[name]
    records = make(vocab)
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in records))
    monkeypatch.setattr(ec, "load_dataset", lambda *a, **k: {"train": [{key: r} for r in records]})
    monkeypatch.setattr(ec, "word_tokenize", _WORD.findall)  # the same counter on both sides
    cfg = MeasureConfig(dataset=str(path), repetitions=REPS, max_length=MAX_LENGTH, min_words=MIN_WORDS,
                        max_words=MAX_WORDS, batch_size=1)
    return name, records, cfg


def test_corpus_shapes_exercise_empty_records_and_glue(case):
    name, records, _ = case
    if name == "wikipedia":
        assert "" in records and any(r.strip() == "" and r for r in records)
    else:
        assert all(not r[-1].isspace() and not r[0].isspace() for r in records)


def test_sampled_texts_and_inputs_equal_the_authors(case, tiny):
    name, _, cfg = case
    cfg.repetitions = SEEDS
    ours, _ = prepare_texts(cfg)
    for seed, text in enumerate(ours):
        theirs = ec.get_random_long_text(name, min_word_count=MIN_WORDS, max_word_count=MAX_WORDS,
                                         random_seed=seed)
        # the same records joined the same way; lmdisp only cuts the tail at max_words
        assert theirs.startswith(text), (name, seed)
        assert text == theirs or count_words(text) == MAX_WORDS
        assert count_words(text) >= MIN_WORDS
        tok = tiny.tokenizer
        assert (tok(text, truncation=True, max_length=MAX_LENGTH)["input_ids"]
                == tok(theirs, truncation=True, max_length=MAX_LENGTH)["input_ids"]), (name, seed)


def test_mean_matrices_equal_the_authors(case, tiny):
    name, _, cfg = case
    texts, _ = prepare_texts(cfg)
    ours = measure_model(tiny, texts, cfg)
    theirs = ec.measure_embedding_condensation(
        tiny.model, tiny.tokenizer, dataset=name, repetitions=REPS, max_length=MAX_LENGTH,
        min_word_count=MIN_WORDS, max_word_count=MAX_WORDS, plot=False, save_path=None,
        show_progress=False).cossim_by_layer
    assert ours.mean_matrices.shape == theirs.shape
    np.testing.assert_allclose(ours.mean_matrices, theirs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.layer_means, theirs.astype(np.float64).mean(axis=(1, 2)), rtol=0, atol=1e-5)
