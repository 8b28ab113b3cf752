"""Training corpora as streams of records, read once, in order, never materialised.

A corpus spec resolves to a `lmdisp.data.Source` (`lmdisp.data.resolve_source`, the one
resolver measure uses too): `builtin` (CPython's help topics), a local .txt (one record per
line), .jsonl/.json (JSON lines or one array; `text_field`) or .parquet file (row group by
row group) or a folder of one of those formats (files in sorted order), or a hub dataset read
with `datasets.load_dataset(..., streaming=True)`. `iter_records` yields its non-blank
records; a record without the text field is refused, naming its line, as measure does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lmdisp.data import Source, check_local_file, hub_failure, json_text, row_text
from lmdisp.errors import DataError


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
    if kind != "parquet":
        with open(path, "rb") as fh:
            if b"\0" in fh.read(8192):
                raise DataError(f"{path}: a binary file, not text")
    try:
        yield from _read_file(path, kind, field_)
    except DataError:
        raise
    except Exception as exc:  # UnicodeDecodeError, JSON errors, pyarrow's errors
        check_local_file(path, kind, field_)
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
            yield from (row_text(r, f"{path}, record {i}", field_) for i, r in enumerate(json.load(fh), 1))
        else:                                  # JSON lines: errors name the line
            yield from (json_text(line, path, n, field_) for n, line in enumerate(fh, 1) if line.strip())


def _hub_records(src: Source) -> Iterator[str]:
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(src.path, src.subset, split=src.split, streaming=True)
        first = next(iter(ds.take(1)), None)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise hub_failure(src.spec, exc, src.path) from None
    if first is not None and src.field not in first:
        raise DataError(f"dataset `{src.spec}` has no text field `{src.field}` (columns: {', '.join(first)}); "
                        "set --text-field")
    rows = iter(ds.select_columns([src.field]))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # the stream broke mid-corpus (a dropped connection, a timeout, a 5xx)
            raise hub_failure(src.spec, exc, src.path) from None
        yield row[src.field] or ""
