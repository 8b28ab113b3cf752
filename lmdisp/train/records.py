"""Training corpora as streams of records, read once, in order, never materialised.

A corpus spec resolves to a `Source`: `builtin` (CPython's help topics), a local .txt (one
record per line), .jsonl/.json (JSON lines or one array; `text_field`) or .parquet file (row
group by row group) or a folder of one of those formats (files in sorted order), or a hub
dataset (a short name from `lmdisp.data`, or an id with `text_field`) read with
`datasets.load_dataset(..., streaming=True)`. `iter_records` yields its non-blank records.
`Source.identity()` is what a token-shard cache key sees of it: local files by path, size
and modification time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmdisp.errors import DataError


@dataclass(frozen=True)
class Source:
    """Where records come from: a corpus spec resolved to something that can be streamed."""

    spec: str
    kind: str                      # builtin | txt | jsonl | parquet | hub
    path: str | None = None        # hub id
    subset: str | None = None
    split: str = "train"
    field: str = "text"
    files: tuple[str, ...] = ()

    def identity(self) -> dict:
        """What the cache key sees: local files by path, size and modification time."""
        ident = {"kind": self.kind, "path": self.path, "subset": self.subset, "split": self.split,
                 "field": self.field}
        if self.files:
            ident["files"] = [[f, os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in self.files]
        elif self.kind == "builtin":
            import sys

            ident["python"] = sys.version.split()[0]  # pydoc_data changes with Python
        return ident


_SUFFIX = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # .json: lines or an array


def resolve_source(spec: str, *, text_field: str | None = None, split: str = "train",
                   subset: str | None = None) -> Source:
    """`builtin`, a local file or folder, a short name (`wikitext`, `fineweb-edu`, the
    measurement corpora) or a hub id (with `text_field`)."""
    from lmdisp.data import PAPER_CORPORA, TRAIN_CORPORA

    if spec == "builtin":
        return Source(spec, "builtin")
    path = Path(spec).expanduser()
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIX) if path.is_dir() else [path]
        kinds = {_SUFFIX.get(p.suffix) for p in files}
        if not files or None in kinds:
            raise DataError(f"{path}: expected .txt, .jsonl, .json or .parquet file(s)")
        if len(kinds) > 1:
            raise DataError(f"{path}: mixes file formats {sorted(kinds)}; use one format per folder")
        kind = kinds.pop()
        return Source(spec, kind, field="text" if kind == "txt" else (text_field or "text"), split=split,
                      files=tuple(str(p.resolve()) for p in files))
    known = {**PAPER_CORPORA, **TRAIN_CORPORA}
    if spec in known:
        hub_id, config, split_, field_ = known[spec]
        return Source(spec, "hub", hub_id, subset or config, split_, text_field or field_)
    if spec.endswith(tuple(_SUFFIX)) or spec.startswith((".", "/", "~")):
        raise DataError(f"corpus file not found: {spec}")
    if not text_field:
        from lmdisp.data import unknown_corpus

        raise unknown_corpus(spec)
    return Source(spec, "hub", spec, subset, split, text_field)


# ----------------------------------------------------------------------------- reading

def iter_records(src: Source) -> Iterator[str]:
    """The source's non-blank records, in order, one at a time."""
    for text in _raw_records(src):
        if text and not text.isspace():
            yield text


def _raw_records(src: Source) -> Iterator[str]:
    if src.kind == "builtin":
        import pydoc_data.topics as topics

        yield from (topics.topics[k] for k in sorted(topics.topics))
    elif src.kind == "hub":
        yield from _hub_records(src)
    else:
        for name in src.files:
            yield from _file_records(Path(name), src.kind, src.field)


def _file_records(path: Path, kind: str, field_: str) -> Iterator[str]:
    """A local file's records; a file that cannot be read as its format gets one line naming
    the file, the line or row and the problem (`lmdisp.data.check_local_file`)."""
    from lmdisp.data import check_local_file

    if kind != "parquet":
        with open(path, "rb") as fh:
            if b"\0" in fh.read(8192):
                raise DataError(f"{path}: a binary file, not text")
    try:
        yield from _read_file(path, kind, field_)
    except DataError:
        raise
    except Exception as exc:  # UnicodeDecodeError, JSON errors, pyarrow's errors
        check_local_file(path, "json" if kind == "jsonl" and path.suffix == ".jsonl" else kind, field_)
        raise DataError(f"{path}: cannot read it as {kind} ({(str(exc).splitlines() or [type(exc).__name__])[0]})") \
            from None


def _read_file(path: Path, kind: str, field_: str) -> Iterator[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if field_ not in pf.schema_arrow.names:
            raise DataError(f"{path} has no text field `{field_}` (columns: {', '.join(pf.schema_arrow.names)}); "
                            "set --text-field")
        for batch in pf.iter_batches(columns=[field_], batch_size=1024):
            yield from (t or "" for t in batch.column(0).to_pylist())
        return
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        fh.seek(0)
        if kind == "txt":
            yield from (line.rstrip("\n") for line in fh)
        elif head == "[":  # one JSON array (read whole: such files are small)
            yield from (_field(r, field_, path) for r in json.load(fh))
        else:                                  # JSON lines: errors name the line
            from lmdisp.data import json_text

            yield from (json_text(line, path, n, field_) for n, line in enumerate(fh, 1) if line.strip())


def _field(row, field_: str, path) -> str:
    if not isinstance(row, dict) or field_ not in row:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{path}: a record has no text field `{field_}` (keys: {keys}); set --text-field")
    return row[field_] or ""


def _hub_records(src: Source) -> Iterator[str]:
    import datasets

    from lmdisp.data import OFFLINE_HINT

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(src.path, src.subset, split=src.split, streaming=True)
        first = next(iter(ds.take(1)), None)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot stream dataset `{src.spec}`: {line[:300]}; {OFFLINE_HINT}") from None
    if first is not None and src.field not in first:
        raise DataError(f"dataset `{src.spec}` has no text field `{src.field}` (columns: {', '.join(first)}); "
                        "set --text-field")
    for row in ds.select_columns([src.field]):
        yield row[src.field] or ""
