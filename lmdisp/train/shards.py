"""Token shards: a training corpus tokenised once, as a stream, into memory-mapped blocks.

The corpus is read record by record (hub datasets with `streaming=True`, local
.txt/.jsonl/.json/.parquet files line by line or row group by row group, or the builtin
corpus), blank records are dropped, each record is tokenised with no special tokens, and the
token stream is cut into blocks of `context_length` tokens with no separator between records
(transformers' `run_clm` packing; a record may straddle two blocks). Writing stops as soon
as the blocks needed are there, so the time to the first step grows with the budget, not
with the corpus. Tokens are stored as raw `uint16` when the vocabulary fits (< 65,536 ids),
else `uint32`: 2 or 4 bytes per token kept, nothing else (the attention mask is all ones
and the labels are the inputs, so neither is stored).

Block k of a cache is a pure function of (source, subset, split, text field, tokenizer,
context length, filter): a longer build is a superset of a shorter one. So a cache is
keyed by those and reused by every run whose budget it covers: every method and seed reads
bit-identical blocks. The first `held` blocks are held out (condensation tracking); training
reads blocks `held .. held + n` as a map-style dataset, which the Trainer's sampler
shuffles by seed and shards across processes, so a resume skips in the sampler, not in the
data.

Concurrency: a build writes into a temporary folder and renames it into place when
complete; a folder is only used once its `index.json` (written last) is there, so a killed
build leaves nothing usable. Builders of one key take an exclusive `flock` (released by the
kernel if the holder dies): under `torchrun` one process per machine builds and the others
wait on the lock, then read what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lmdisp.errors import DataError

FORMAT = 1
FILTER = "drop-blank-records"  # the only record filter: empty or whitespace-only records go
TOKENS = "tokens.bin"
INDEX = "index.json"
BATCH_CHARS = 1 << 20            # text handed to the tokenizer per call (about 1 MB)
Progress = Callable[[dict], None]


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
        raise DataError(f"--dataset {spec}: a hub dataset needs --text-field (the column holding text)")
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
        else:                                  # JSON lines
            yield from (_field(json.loads(line), field_, path) for line in fh if line.strip())


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


def _batches(records: Iterator[str]) -> Iterator[list[str]]:
    """Lists of records of about `limit` characters; the limit starts at 64 kB and doubles
    up to `BATCH_CHARS`, so a small budget stops after little text."""
    batch, size, limit = [], 0, 1 << 16
    for text in records:
        batch.append(text)
        size += len(text)
        if size >= limit:
            yield batch
            batch, size, limit = [], 0, min(2 * limit, BATCH_CHARS)
    if batch:
        yield batch


# ----------------------------------------------------------------------------- tokenising

def token_dtype(tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= 1 << 16 else np.dtype(np.uint32)


def tokenizer_identity(tokenizer) -> str:
    """A hash of everything that decides the ids: the fast tokenizer's full JSON (vocab,
    merges, normaliser, pre-tokeniser), else the vocabulary itself."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode(texts: list[str], tokenizer=None, dtype=np.uint32) -> np.ndarray:
    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return np.concatenate([np.asarray(seq, dtype=dtype) for seq in ids]) if ids else np.empty(0, dtype)


def _encoded(batches: Iterator[list[str]], tokenizer, dtype, num_proc: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """(records, tokens) per batch, in order. `num_proc > 1`: a pool of tokenizer processes
    with a bounded window of batches in flight (a plain `imap` would read the whole corpus
    ahead); otherwise the fast tokenizer's own threads encode each batch."""
    if not num_proc or num_proc <= 1:
        for batch in batches:
            yield len(batch), _encode(batch, tokenizer, dtype)
        return
    import multiprocessing as mp
    from collections import deque

    ctx = mp.get_context("spawn")  # no fork of a process that holds threads (tokenizers, torch)
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        window: deque = deque()
        for batch in batches:
            window.append((len(batch), pool.apply_async(_encode, (batch, None, dtype))))
            if len(window) >= 2 * num_proc:
                n, res = window.popleft()
                yield n, res.get()
        while window:
            n, res = window.popleft()
            yield n, res.get()


# ----------------------------------------------------------------------------- the cache

def shard_root(cache_dir: str | None = None) -> Path:
    from lmdisp.models import cache_dir as lmdisp_cache

    return Path(cache_dir).expanduser() if cache_dir else lmdisp_cache() / "tokens"


def cache_key(src: Source, tokenizer, context_length: int) -> tuple[str, dict]:
    """The cache folder's name and the identity it hashes."""
    ident = {"format": FORMAT, "source": src.identity(), "tokenizer": tokenizer_identity(tokenizer),
             "context_length": context_length, "filter": FILTER}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-._" else "-" for c in Path(src.spec).name or src.spec)[:40]
    return f"{slug}-ctx{context_length}-{digest}", ident


@dataclass
class Shards:
    """A complete cache folder: `n_blocks` blocks of `context_length` tokens."""

    path: Path
    index: dict = field(repr=False)
    built: bool = False   # True when this call built it

    @property
    def n_blocks(self) -> int:
        return self.index["n_blocks"]

    @property
    def exhausted(self) -> bool:
        """The whole corpus is in it (it gave fewer blocks than asked for)."""
        return self.index["exhausted"]

    def blocks(self, start: int, stop: int) -> "TokenBlocks":
        return TokenBlocks(self.path / TOKENS, self.index["dtype"], self.index["context_length"], start, stop)


def find_shards(folder: Path, need: int) -> Shards | None:
    """A complete build under `folder` with at least `need` blocks (or the whole corpus)."""
    best = None
    for sub in folder.glob("blocks-*") if folder.is_dir() else ():
        try:
            index = json.loads((sub / INDEX).read_text())
        except (OSError, ValueError):
            continue  # not complete: never used
        if (index["n_blocks"] >= need or index["exhausted"]) and (best is None or index["n_blocks"] > best.n_blocks):
            best = Shards(sub, index)
    return best


def prepare_shards(src: Source, tokenizer, context_length: int, need: int, *, cache_dir: str | None = None,
                   progress: Progress | None = None, num_proc: int | None = None) -> Shards:
    """The shards holding the first `need` blocks of `src` (or all it has): found in the
    cache, or built now under the key's lock (see the module docstring)."""
    name, ident = cache_key(src, tokenizer, context_length)
    folder = shard_root(cache_dir) / name
    found = find_shards(folder, need)
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(folder / ".lock"):
            found = find_shards(folder, need)  # another process may have built it while we waited
            if found:
                return found
            for stale in folder.glob(".tmp-*"):  # left by a killed build: we hold the lock, so it is dead
                shutil.rmtree(stale, ignore_errors=True)
            return _build(src, tokenizer, context_length, need, folder, ident, progress, num_proc)
    except Exception:
        if {p.name for p in folder.iterdir()} <= {".lock"}:  # a refused source leaves no cache folder
            shutil.rmtree(folder, ignore_errors=True)
        raise


class _locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _build(src: Source, tokenizer, ctx: int, need: int, folder: Path, ident: dict,
           progress: Progress | None, num_proc: int | None) -> Shards:
    from contextlib import closing

    dtype = token_dtype(tokenizer)
    tmp = folder / f".tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    started, records, read, written = time.perf_counter(), 0, 0, 0
    carry = np.empty(0, dtype)
    try:
        with open(tmp / TOKENS, "wb") as fh, \
                closing(_encoded(_batches(iter_records(src)), tokenizer, dtype, num_proc)) as stream:
            for n, ids in stream:
                records, read = records + n, read + len(ids)
                buf = np.concatenate([carry, ids])
                full = min(len(buf) // ctx, need - written)
                fh.write(buf[: full * ctx].tobytes())
                written, carry = written + full, buf[full * ctx:]
                if progress:
                    progress(_report(written, need, ctx, records, started, done=False))
                if written >= need:
                    break
            fh.flush()
            os.fsync(fh.fileno())
        if written == 0:
            raise DataError(f"dataset `{src.spec}` holds no non-empty text" if not records else
                            f"dataset `{src.spec}` gives {read} tokens, less than one block of {ctx}; "
                            "lower --context-length or use more text")
        index = {"format": FORMAT, "n_blocks": written, "context_length": ctx, "dtype": dtype.name,
                 "exhausted": written < need, "records_read": records, "tokens_read": read,
                 "build_seconds": round(time.perf_counter() - started, 3), "identity": ident}
        _write_index(tmp / INDEX, index)
        final = folder / f"blocks-{written}"
        try:
            os.rename(tmp, final)   # atomic: the folder appears complete or not at all
        except OSError:             # the same build already there (another machine on a shared disk)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(_report(written, need, ctx, records, started, done=True))
    return Shards(final, json.loads((final / INDEX).read_text()), built=True)


def _write_index(path: Path, index: dict) -> None:
    with open(path, "w") as fh:
        json.dump(index, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _report(written: int, need: int, ctx: int, records: int, started: float, done: bool) -> dict:
    seconds = time.perf_counter() - started
    return {"tokens": written * ctx, "target": need * ctx, "records": records, "seconds": seconds,
            "tokens_per_s": written * ctx / max(seconds, 1e-9), "done": done}


# ----------------------------------------------------------------------------- reading blocks

class TokenBlocks:
    """Blocks `start .. stop` of a token file as a map-style dataset: item i is
    {input_ids, attention_mask (ones), labels (= input_ids)} as int64 tensors; a slice gives
    the same keys stacked. The file is memory-mapped on first access in each process."""

    def __init__(self, path: Path, dtype: str, context_length: int, start: int, stop: int):
        self.path, self.dtype, self.context_length = Path(path), dtype, context_length
        self.start, self.stop = start, stop
        self._array = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getstate__(self):  # DataLoader workers map the file themselves
        return {**self.__dict__, "_array": None}

    def _blocks(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=self.dtype, mode="r").reshape(-1, self.context_length)
        return self._array

    def __getitem__(self, i):
        import torch

        if isinstance(i, slice):
            rows = range(self.start, self.stop)[i]
            ids = torch.from_numpy(self._blocks()[rows.start:rows.stop:rows.step].astype(np.int64))
        else:
            if not -len(self) <= i < len(self):
                raise IndexError(i)
            ids = torch.from_numpy(self._blocks()[self.start + (i % len(self))].astype(np.int64))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
