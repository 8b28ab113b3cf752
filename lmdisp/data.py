"""Corpora and the paper's text sampling.

A corpus spec is one string:

- `wikipedia`, `pubmed`, `imdb`, `squad`: the paper's four sources and fields;
- `builtin`: CPython's own `pydoc_data` help topics, an English corpus present on every
  Python install (about 65k words), so everything works offline;
- a local `.txt` (one record per line), `.jsonl`/`.json`, `.parquet` file, or a folder of
  them;
- any other Hugging Face dataset id (`--text-field` names the column).

Sampling follows the authors' protocol: repetition r seeds `numpy.random.default_rng(r)`,
draws a start record in the first 95% of the corpus and concatenates consecutive records
exactly as the authors do (`text += record`, no separator) until the sample holds
`min_words` words. Unlike the authors' loop (whose upper bound never
triggers), the sample is then cut at `max_words` words. Words are whitespace-separated
runs; NLTK's `word_tokenize` (the authors' counter, which needs a download) also splits off
punctuation, so it counts more words in the same text and our samples are never shorter
than theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmdisp.errors import DataError

# name -> (hub id, config, split, field); the hub ids the authors' short names now resolve to.
PAPER_CORPORA: dict[str, tuple[str, str | None, str, str]] = {
    "wikipedia": ("Salesforce/wikitext", "wikitext-103-v1", "train", "text"),
    "pubmed": ("qiaojin/PubMedQA", "pqa_labeled", "train", "long_answer"),
    "imdb": ("stanfordnlp/imdb", None, "train", "text"),
    "squad": ("rajpurkar/squad", None, "train", "context"),
}
# The one suffix map: local corpus file suffix -> its kind (.json: JSON lines or one array).
LOCAL_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_BUILDERS = {"txt": "text", "jsonl": "json", "parquet": "parquet"}  # kind -> `datasets` builder
_WORD = re.compile(r"\S+")
DATASET_OFFLINE_HINT = "use `--dataset builtin` (offline) or a local .txt/.jsonl/.parquet file"


@dataclass(frozen=True)
class Source:
    """A corpus spec resolved (`resolve_source`): what measure samples texts from and training
    streams records from (`lmdisp.train.records.iter_records`)."""

    spec: str
    kind: str                      # builtin | txt | jsonl | parquet | hub
    path: str | None = None        # hub id
    subset: str | None = None
    split: str = "train"
    field: str = "text"
    files: tuple[str, ...] = ()

    def identity(self) -> dict:
        """What a token-shard cache key sees: local files by path, size and modification time."""
        import os
        import sys

        ident = {"kind": self.kind, "path": self.path, "subset": self.subset, "split": self.split,
                 "field": self.field}
        if self.files:
            ident["files"] = [[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in self.files]
        elif self.kind == "builtin":
            ident["python"] = sys.version.split()[0]  # pydoc_data changes with Python
        return ident


def resolve_source(spec: str, *, text_field: str | None = None, split: str = "train",
                   subset: str | None = None) -> Source:
    """The one corpus resolver: `builtin`, a local file or folder, a short name (the paper's
    measurement corpora, `wikitext`, `fineweb-edu`) or a hub id (with `text_field`)."""
    if spec == "builtin":
        return Source(spec, "builtin")
    path = Path(spec).expanduser()
    if path.exists():
        files, kind = local_files(path)
        return Source(spec, kind, field="text" if kind == "txt" else (text_field or "text"), split=split,
                      files=tuple(str(p.resolve()) for p in files))
    if spec in PAPER_CORPORA or spec in TRAIN_CORPORA:  # one vocabulary across commands
        hub_id, config, split_, field = PAPER_CORPORA.get(spec) or TRAIN_CORPORA[spec]
        return Source(spec, "hub", hub_id, subset or config, split_, text_field or field)
    if spec.endswith(tuple(LOCAL_FORMATS)) or spec.startswith((".", "/", "~")):
        raise DataError(f"corpus file not found: {spec}")
    if not text_field:
        raise unknown_corpus(spec)
    return Source(spec, "hub", spec, subset, split, text_field)


def hub_failure(spec: str, exc: Exception, hub_id: str | None = None) -> DataError:
    """One line for a dataset `datasets` could not load: what the hub said (`lmdisp.hub`:
    unknown id, gated, server error, timeout, a download cut off), else the library's first line
    (offline, a local file it cannot read)."""
    from lmdisp.hub import hub_problem

    problem = hub_problem(exc, "dataset") if hub_id else None
    if problem:
        named = f" (`{hub_id}`)" if hub_id != spec else ""  # a short name: the hub id it stands for
        return DataError(f"cannot load dataset `{spec}`{named}: {problem}")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DataError(f"cannot load dataset `{spec}`: {first[:300]}; {DATASET_OFFLINE_HINT}")


@dataclass
class Corpus:
    """Records of text, indexable without materialising a large hub dataset."""

    name: str
    records: Any  # a list[str] or a datasets.Dataset with one column
    field: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> str:
        rec = self.records[i]
        return (rec[self.field] if self.field else rec) or ""


def count_words(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def load_corpus(spec: str = "wikipedia", *, text_field: str | None = None,
                split: str = "train", subset: str | None = None) -> Corpus:
    """The corpus of a spec (`resolve_source`) as records measure can sample from."""
    src = resolve_source(spec, text_field=text_field, split=split, subset=subset)
    if src.kind == "builtin":
        import pydoc_data.topics as topics

        return Corpus("builtin", [topics.topics[k] for k in sorted(topics.topics)])
    if src.files:
        return _load_local(src)
    return _load_hub(src.spec, src.path, src.subset, src.split, src.field, hub_id=src.path)


def unknown_corpus(spec: str) -> DataError:
    """A `--dataset` that is no named corpus, no local file and has no --text-field for the hub."""
    import difflib

    close = difflib.get_close_matches(spec, [*PAPER_CORPORA, *TRAIN_CORPORA, "builtin"], 2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return DataError(f"--dataset {spec}: not a named corpus{hint}; a hub dataset id needs --text-field "
                     f"(the column holding text). Named corpora: {', '.join([*PAPER_CORPORA, *TRAIN_CORPORA])}, "
                     "builtin")


def local_files(path: Path) -> tuple[list[Path], str]:
    """The corpus files of a file or folder and their one kind (`LOCAL_FORMATS`)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_FORMATS) if path.is_dir() else [path]
    kinds = {LOCAL_FORMATS.get(p.suffix) for p in files}
    if not files or None in kinds:
        raise DataError(f"{path}: expected .txt, .jsonl, .json or .parquet file(s)")
    if len(kinds) > 1:
        raise DataError(f"{path}: mixes file formats {sorted(kinds)}; use one format per folder")
    return files, kinds.pop()


def _load_local(src: Source) -> Corpus:
    """Local files through `datasets` (memory-mapped, random access), read as strictly as
    training reads them: a record without the text field is refused, naming its line."""
    files = [Path(f) for f in src.files]
    for file in files:
        if file.stat().st_size == 0:
            raise DataError(f"{file}: the file is empty")

    def diagnose() -> None:  # name the file, line and problem instead of datasets' generic message
        for file in files:
            check_local_file(file, src.kind, src.field)

    corpus = _load_hub(src.spec, _BUILDERS[src.kind], None, "train", src.field, on_error=diagnose,
                       data_files=list(src.files))
    feature = corpus.records.features[src.field]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise DataError(f"{src.spec}: the `{src.field}` field holds {feature}, not text; set --text-field")
    if src.kind == "jsonl" and corpus.records.data.column(src.field).null_count:
        diagnose()  # datasets fills a missing field with null: name the line as training does
    return corpus


def _load_hub(name: str, path: str, config: str | None, split: str, field: str, on_error=None,
              hub_id: str | None = None, **kwargs) -> Corpus:
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(path, config, split=split, **kwargs)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        if on_error is not None:
            on_error()  # a more precise DataError, when it finds one
        raise hub_failure(name, exc, hub_id) from None
    if field not in ds.column_names:
        raise DataError(f"dataset `{name}` has no text field `{field}` (columns: {', '.join(ds.column_names)}); "
                        "set --text-field")
    if len(ds) == 0:
        raise DataError(f"dataset `{name}` is empty")
    return Corpus(name, ds.select_columns([field]), field)


def sample_text(corpus: Corpus, seed: int, min_words: int = 1024, max_words: int = 1280) -> str:
    """One long text: consecutive records from a seeded random start (see module docstring).

    Assembled exactly as the authors' `get_random_long_text`: `text += record`, with no
    separator (an empty record adds nothing; records that do not end in whitespace are glued
    to the next one), stopping once the *concatenated* text holds `min_words` words. The
    count is kept incrementally: appending `rec` adds count_words(rec) words, minus one when
    the text ends and `rec` starts with a non-space character (the two halves form one word).
    """
    n = len(corpus)
    rng = np.random.default_rng(seed=seed)
    idx = int(rng.integers(0, max(1, int(n * 0.95))))  # the authors' start range
    parts: list[str] = []
    words = 0
    last = ""  # the last character of the text so far
    for step in range(n):
        rec = corpus[(idx + step) % n]
        if not rec:
            continue
        glued = bool(last) and not last.isspace() and not rec[0].isspace()
        words += count_words(rec) - glued
        parts.append(rec)
        last = rec[-1]
        if words >= min_words:
            return _truncate_words("".join(parts), max_words)
    raise DataError(f"corpus `{corpus.name}` holds only {words} words, fewer than --min-words "
                    f"{min_words} needed for one sample")


def _truncate_words(text: str, max_words: int) -> str:
    for i, m in enumerate(_WORD.finditer(text)):
        if i + 1 == max_words:
            return text[: m.end()]
    return text


def sample_texts(corpus: Corpus, repetitions: int, *, seed: int = 0, min_words: int = 1024,
                 max_words: int = 1280) -> list[str]:
    """The texts for repetitions 0..R-1: repetition r uses seed `seed + r`."""
    return [sample_text(corpus, seed + r, min_words, max_words) for r in range(repetitions)]


def read_texts(path: str | Path) -> list[str]:
    """Fixed texts for `--texts`: a .txt file (one text per line) or .jsonl with a `text` field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--texts {path}: a folder, not a file (corpora go to --dataset)" if path.is_dir()
                        else f"--texts file not found: {path}")
    if path.suffix in (".parquet", ".arrow", ".feather", ".csv", ".tsv"):
        raise DataError(f"--texts {path}: expected a .txt file (one text per line) or a .jsonl file of "
                        "{\"text\": ...} objects; corpora (.parquet, folders, hub ids) go to --dataset")
    lines = _utf8_lines(path, "--texts ")
    if path.suffix in (".jsonl", ".json"):
        texts = [json_text(line, path, i, "text", "--texts ") for i, line in lines]
    else:
        texts = [line for _, line in lines]
    if not texts:
        raise DataError(f"--texts file holds no text: {path}")
    return texts


def _utf8_lines(path: Path, what: str = "") -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a UTF-8 text file, or a DataError naming
    the line of the first byte that is not UTF-8 (a binary file, or another encoding)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise DataError(f"{what}{path}: a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{what}{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from None
    return [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def json_text(line: str, path: Path, number: int, field: str, what: str = "") -> str:
    import json

    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{what}{path}, line {number}: not valid JSON ({exc})") from None
    return row_text(row, f"{what}{path}, line {number}", field)


def row_text(row: Any, where: str, field: str) -> str:
    """The text field of one JSON record, or one line naming where it is and what is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with a `{field}` field, got {type(row).__name__}")
    if field not in row:
        raise DataError(f"{where}: no `{field}` field (keys: {', '.join(map(str, row)) or 'none'}); set --text-field")
    if not isinstance(row[field], str):
        raise DataError(f"{where}: `{field}` is {type(row[field]).__name__}, not text")
    return row[field]


def check_local_file(path: Path, kind: str, field: str) -> None:
    """Why a local corpus file cannot be read as `kind`: one line naming the file, the line
    or record, and the problem. Called only after a failed or suspect load."""
    import json

    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            pq.read_schema(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses
            raise DataError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
        return
    lines = _utf8_lines(path)
    if kind != "jsonl" or not lines:
        return
    if lines[0][1].lstrip().startswith("["):  # one JSON array
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        for i, row in enumerate(rows if isinstance(rows, list) else [rows], 1):
            row_text(row, f"{path}, record {i}", field)
        return
    for number, line in lines:
        json_text(line, path, number, field)


def cycle_texts(texts: Sequence[str], repetitions: int) -> list[str]:
    """Repetition r uses text r mod len(texts), as in the authors' package."""
    return [texts[r % len(texts)] for r in range(repetitions)]


# ----------------------------------------------------------------------------- training data

# Training corpora by short name: (hub id, config, split, field). `wikitext` is the paper's
# mid-training data (wikitext-103-raw-v1, empty lines dropped). Training reads them through
# token shards (`lmdisp.train.shards`), streamed once.
TRAIN_CORPORA: dict[str, tuple[str, str | None, str, str]] = {
    "wikitext": ("Salesforce/wikitext", "wikitext-103-raw-v1", "train", "text"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text"),
    # Table 5's corpus: what the authors' TorchTitan `fineweb_edu` loader reads (docs/fidelity.md P5).
    "fineweb-edu-dedup-10b": ("EleutherAI/fineweb-edu-dedup-10b", None, "train", "text"),
}
