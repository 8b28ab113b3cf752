"""Token shards: a training corpus tokenised once, as a stream, into memory-mapped blocks.

The corpus is read record by record (`lmdisp.train.records`: hub datasets with
`streaming=True`, local .txt/.jsonl/.json/.parquet files line by line or row group by row
group, or the builtin corpus), blank records are dropped, each record is tokenised with no special tokens, and the
token stream is cut into blocks of `context_length` tokens with no separator between records
(transformers' `run_clm` packing; a record may straddle two blocks). Two options (`Packing`):
the authors' packing per batch of 1000 records with each batch's tail dropped, and BOS/EOS
around each record. Writing stops as soon
as the blocks needed are there, so the time to the first step grows with the budget, not
with the corpus. Tokens are stored as raw `uint16` when the vocabulary fits (< 65,536 ids),
else `uint32`: 2 or 4 bytes per token kept, nothing else (the attention mask is all ones
and the labels are the inputs, so neither is stored).

Block k of a cache is a pure function of (source, subset, split, text field, tokenizer,
context length, filter, packing): a longer build is a superset of a shorter one. So a cache is
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
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lmdisp import integrity, space
from lmdisp.errors import DataError
from lmdisp.train.records import Source, iter_records, resolve_source  # noqa: F401 (re-exported)

FORMAT = 1
FILTER = "drop-blank-records"  # the only record filter: empty or whitespace-only records go
TOKENS = "tokens.bin"
INDEX = "index.json"
BATCH_CHARS = 1 << 20            # text handed to the tokenizer per call (about 1 MB)
AUTHORS_BATCH = 1000             # records per `datasets.map` batch in the authors' packing (its default)
ShardProgress = Callable[[dict], None]  # called with a progress report while shards are built
log = logging.getLogger("lmdisp")


@dataclass(frozen=True)
class Packing:
    """How records become blocks. `mode`: `continuous` (one token stream, leftovers carried
    into the next block) or `per-1000` (the authors' HF scripts, `midtrain_gpt2.py`
    `group_texts` under `datasets.map(batched=True)`: each batch of 1000 records is packed on
    its own and its tail dropped; docs/fidelity.md D2). `doc_tokens`: `none` or `bos-eos`
    (each record wrapped in the tokenizer's BOS, where it has one, and EOS, as the authors'
    TorchTitan loader; docs/fidelity.md P5)."""

    mode: str = "continuous"
    doc_tokens: str = "none"

    def identity(self) -> dict:
        """The cache-key entries: none for the defaults, so existing caches stay valid."""
        return {**({"packing": self.mode} if self.mode != "continuous" else {}),
                **({"doc_tokens": self.doc_tokens} if self.doc_tokens != "none" else {})}

    def wrap(self, tokenizer) -> tuple[list[int], list[int]]:
        """(ids before, ids after) each record."""
        if self.doc_tokens == "none":
            return [], []
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if eos is None:
            raise DataError("doc_tokens bos-eos: the tokenizer has no EOS token; use doc_tokens none")
        return ([bos] if bos is not None else []), [eos]


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


def _record_groups(records: Iterator[str], size: int = AUTHORS_BATCH) -> Iterator[list[str]]:
    """Lists of exactly `size` records (the last one shorter): the authors' map batches."""
    batch = []
    for text in records:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(texts: list[str], tokenizer=None, dtype=np.uint32, wrap=((), ())) -> np.ndarray:
    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    before, after = wrap
    if before or after:
        ids = [[*before, *seq, *after] for seq in ids]
    return np.concatenate([np.asarray(seq, dtype=dtype) for seq in ids]) if ids else np.empty(0, dtype)


def _encoded(batches: Iterator[list[str]], tokenizer, dtype, num_proc: int | None,
             wrap=((), ())) -> Iterator[tuple[int, np.ndarray]]:
    """(records, tokens) per batch, in order. `num_proc > 1`: a pool of tokenizer processes
    with a bounded window of batches in flight (a plain `imap` would read the whole corpus
    ahead); otherwise the fast tokenizer's own threads encode each batch."""
    if not num_proc or num_proc <= 1:
        for batch in batches:
            yield len(batch), _encode(batch, tokenizer, dtype, wrap)
        return
    import multiprocessing as mp
    from collections import deque

    ctx = mp.get_context("spawn")  # no fork of a process that holds threads (tokenizers, torch)
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        window: deque = deque()
        for batch in batches:
            window.append((len(batch), pool.apply_async(_encode, (batch, None, dtype, wrap))))
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


def cache_key(src: Source, tokenizer, context_length: int, packing: Packing = Packing()) -> tuple[str, dict]:
    """The cache folder's name and the identity it hashes."""
    ident = {"format": FORMAT, "source": src.identity(), "tokenizer": tokenizer_identity(tokenizer),
             "context_length": context_length, "filter": FILTER, **packing.identity()}
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


def find_shards(folder: Path, need: int, damaged: list | None = None) -> Shards | None:
    """The largest complete, undamaged build under `folder` with at least `need` blocks (or the
    whole corpus). Builds whose token file does not match the size and checksum recorded in
    their index are skipped, and listed in `damaged` as (folder, what is wrong)."""
    found = []
    for sub in folder.glob("blocks-*") if folder.is_dir() else ():
        try:
            index = json.loads((sub / INDEX).read_text())
        except (OSError, ValueError):
            continue  # not complete: never used
        if index["n_blocks"] >= need or index["exhausted"]:
            found.append(Shards(sub, index))
    for shards in sorted(found, key=lambda s: s.n_blocks, reverse=True):
        problem = damage(shards)
        if problem is None:
            return shards
        if damaged is not None:
            damaged.append((shards.path, problem))
    return None


def damage(shards: Shards) -> str | None:
    """What is wrong with a build's token file (None: its size, and its SHA-256 where the index
    records one, are those written; an older build without them is checked by its size)."""
    index = shards.index
    size = index.get("bytes", index["n_blocks"] * index["context_length"] * np.dtype(index["dtype"]).itemsize)
    return integrity.check_file(shards.path / TOKENS, size, index.get("sha256"))


def prepare_shards(src: Source, tokenizer, context_length: int, need: int, *, cache_dir: str | None = None,
                   progress: ShardProgress | None = None, num_proc: int | None = None,
                   packing: Packing = Packing()) -> Shards:
    """The shards holding the first `need` blocks of `src` (or all it has): found in the
    cache, or built now under the key's lock (see the module docstring)."""
    name, ident = cache_key(src, tokenizer, context_length, packing)
    folder = shard_root(cache_dir) / name
    found = find_shards(folder, need, damaged := [])
    if found and not damaged:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(folder / ".lock"):
            found = find_shards(folder, need, damaged := [])  # another process may have built it meanwhile
            for path, problem in damaged:  # we hold the lock: nobody else moves them
                aside = integrity.move_aside(path)
                log.warning("token cache %s is damaged (%s): moved aside to %s%s", path, problem, aside.name,
                            "" if found else "; building it again")
            if found:
                return found
            for stale in folder.glob(".tmp-*"):  # left by a killed build: we hold the lock, so it is dead
                shutil.rmtree(stale, ignore_errors=True)
            return _build(src, tokenizer, context_length, need, folder, ident, progress, num_proc, packing)
    except Exception as exc:
        if {p.name for p in folder.iterdir()} <= {".lock"}:  # a refused source leaves no cache folder
            shutil.rmtree(folder, ignore_errors=True)
        if space.is_no_space(exc):
            raise space.no_space(exc, folder, need * context_length * token_dtype(tokenizer).itemsize,
                                 then="free space there or choose another cache_dir") from None
        raise


@contextmanager
def _locked(path: Path):
    """An exclusive `flock` on `path` (the kernel releases it if the holder dies)."""
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(src: Source, tokenizer, ctx: int, need: int, folder: Path, ident: dict,
           progress: ShardProgress | None, num_proc: int | None, packing: Packing = Packing()) -> Shards:
    from contextlib import closing

    dtype = token_dtype(tokenizer)
    per_batch = packing.mode == "per-1000"
    groups = (_record_groups if per_batch else _batches)(iter_records(src))
    tmp = folder / f".tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    started, records, read, written = time.perf_counter(), 0, 0, 0
    carry = np.empty(0, dtype)
    try:
        with open(tmp / TOKENS, "wb") as fh, \
                closing(_encoded(groups, tokenizer, dtype, num_proc, packing.wrap(tokenizer))) as stream:
            for n, ids in stream:
                records, read = records + n, read + len(ids)
                buf = ids if per_batch else np.concatenate([carry, ids])  # per-1000: each batch's tail dropped
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
                 "bytes": written * ctx * dtype.itemsize, "sha256": integrity.sha256(tmp / TOKENS),
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
        fh.flush(), os.fsync(fh.fileno())


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
