"""Corpora and the paper's seeded sampling."""

import json

import numpy as np
import pytest

from lmdisp.data import Corpus, count_words, load_corpus, read_texts, sample_text, sample_texts
from lmdisp.errors import DataError


def test_builtin_corpus_is_offline_and_large_enough():
    corpus = load_corpus("builtin")
    assert len(corpus) > 50
    assert sum(count_words(corpus[i]) for i in range(len(corpus))) > 60_000


def test_sampling_follows_the_authors_start_and_word_bounds():
    records = [f"record {i} " + "word " * 50 for i in range(200)]
    corpus = Corpus("toy", records)
    text = sample_text(corpus, seed=7, min_words=120, max_words=130)
    # the authors' start record: default_rng(seed).integers(0, int(N * 0.95))
    start = int(np.random.default_rng(7).integers(0, int(200 * 0.95)))
    assert text.startswith(f"record {start} ")
    assert 120 <= count_words(text) <= 130
    assert sample_text(corpus, seed=7, min_words=120, max_words=130) == text  # reproducible
    assert sample_texts(corpus, 3, seed=5, min_words=120, max_words=130)[1] == sample_text(corpus, 6, 120, 130)


def test_sampling_wraps_around_the_end():
    corpus = Corpus("toy", ["a b c "] * 4)
    assert count_words(sample_text(corpus, seed=0, min_words=10, max_words=12)) >= 10


def test_records_are_joined_with_no_separator_as_the_authors_do():
    # `text += record`: an empty record adds nothing, and "c" + "d" form one word "cd"
    corpus = Corpus("toy", ["a b c", "", "d e \n", " \n", "f g"] * 3)
    text = sample_text(corpus, seed=0, min_words=7, max_words=100)
    start = int(np.random.default_rng(0).integers(0, int(15 * 0.95)))
    expected = ""
    for i in range(start, start + 15):
        expected += corpus[i % 15]
        if count_words(expected) >= 7:
            break
    assert text == expected
    assert "a b cd e \n \nf g" in "".join(corpus[i] for i in range(15))


def test_corpus_too_small_is_a_clear_error():
    with pytest.raises(DataError, match="holds only 5 words"):  # "a b c" + "d e f": "cd" is one word
        sample_text(Corpus("toy", ["a b c", "d e f"]), seed=0, min_words=100)


def test_local_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    rows = [{"body": "hello world"}, {"body": "more text"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    txt = load_corpus(str(tmp_path / "a.txt"))
    assert [txt[i] for i in range(len(txt))] == ["first line", "second line"]
    jl = load_corpus(str(tmp_path / "b.jsonl"), text_field="body")
    assert jl[1] == "more text"
    import pandas as pd

    pd.DataFrame({"text": ["x y", "z"]}).to_parquet(tmp_path / "c.parquet")
    assert load_corpus(str(tmp_path / "c.parquet"))[0] == "x y"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "1.txt").write_text("one\n")
    (folder / "2.txt").write_text("two\n")
    assert len(load_corpus(str(folder))) == 2
    with pytest.raises(DataError, match="no text field"):
        load_corpus(str(tmp_path / "b.jsonl"))


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(DataError, match="cannot load dataset `imdb`.*builtin"):
        load_corpus("imdb")
    with pytest.raises(DataError, match="--text-field"):
        load_corpus("someone/some-dataset")


def test_read_texts(tmp_path):
    (tmp_path / "t.txt").write_text("one text\n\nanother\n")
    assert read_texts(tmp_path / "t.txt") == ["one text", "another"]
    (tmp_path / "t.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert read_texts(tmp_path / "t.jsonl") == ["a", "b"]
    with pytest.raises(DataError):
        read_texts(tmp_path / "missing.txt")


def test_measure_and_training_read_one_source_with_the_same_strictness(tmp_path):
    """One resolver (`resolve_source`): measure's records are training's stream, in order, for
    every local kind; a record without the text field is refused by both, naming its line."""
    from lmdisp.train.shards import resolve_source
    from lmdisp.train.records import iter_records

    import pandas as pd

    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text('{"t": "one two"}\n{"t": "three"}\n')
    (tmp_path / "c.json").write_text('[{"t": "x y"}, {"t": "z"}]')
    pd.DataFrame({"t": ["p q", "r"]}).to_parquet(tmp_path / "d.parquet")
    for name in ("a.txt", "b.jsonl", "c.json", "d.parquet"):
        spec = str(tmp_path / name)
        corpus = load_corpus(spec, text_field="t")
        measured = [corpus[i] for i in range(len(corpus)) if corpus[i].strip()]
        assert measured == list(iter_records(resolve_source(spec, text_field="t"))), name
        assert len(measured) == 2
    (tmp_path / "partial.jsonl").write_text('{"text": "a b"}\n{"text": "c d"}\n{"body": "e"}\n')
    spec = str(tmp_path / "partial.jsonl")
    for read in (lambda: load_corpus(spec), lambda: list(iter_records(resolve_source(spec)))):
        with pytest.raises(DataError, match=r"partial.jsonl, line 3: no `text` field \(keys: body\)"):
            read()
    (tmp_path / "partial.json").write_text('[{"text": "a b"}, {"body": "e"}]')
    spec = str(tmp_path / "partial.json")
    for read in (lambda: load_corpus(spec), lambda: list(iter_records(resolve_source(spec)))):
        with pytest.raises(DataError, match=r"partial.json, record 2: no `text` field"):
            read()


def test_one_offline_message_for_measure_and_training():
    from lmdisp.train.shards import resolve_source
    from lmdisp.train.records import iter_records

    with pytest.raises(DataError) as measured:
        load_corpus("imdb")
    with pytest.raises(DataError) as streamed:
        next(iter_records(resolve_source("imdb")))
    for exc in (measured, streamed):
        assert str(exc.value).startswith("cannot load dataset `imdb`: ")
        assert str(exc.value).endswith("use `--dataset builtin` (offline) or a local .txt/.jsonl/.parquet file")
