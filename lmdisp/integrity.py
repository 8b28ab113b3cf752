"""Sizes and checksums recorded when a cache or checkpoint is written, checked before it is read.

A folder that lmdisp writes and later reads back as a whole (a checkpoint, a converted
GGUF model) gets `lmdisp-files.json`: every file's size and SHA-256, written last. Before
the folder is used again, `verify` compares: a missing file (a checkpoint with a shard
gone), a truncated one or a flipped bit is found before any of it is read as data. A
folder without the record (written by an older lmdisp) is taken as it is.

Token shards keep the same two numbers in their own `index.json` (`lmdisp.train.shards`).
Each check reads the file once; a file verified unchanged (same size and mtime) is not read
again by the same process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

RECORD = "lmdisp-files.json"
_CHUNK = 1 << 24
_verified: set[tuple] = set()  # (path, size, mtime_ns, digest) checked by this process


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, size: int, digest: str | None) -> str | None:
    """None when `path` has `size` bytes and (when given) SHA-256 `digest`; else what is wrong."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path.name} is missing"
    if st.st_size != size:
        return f"{path.name} has {st.st_size} bytes, {size} were written"
    key = (str(path), st.st_size, st.st_mtime_ns, digest)
    if digest is None or key in _verified:
        return None
    if sha256(path) != digest:
        return f"{path.name} does not match the checksum recorded when it was written"
    _verified.add(key)
    return None


def record(folder: Path | str) -> Path:
    """Write `folder/lmdisp-files.json`: size and SHA-256 of every file below it (itself aside)."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != RECORD):
        st = path.stat()
        digest = sha256(path)
        _verified.add((str(path), st.st_size, st.st_mtime_ns, digest))
        files[str(path.relative_to(folder))] = {"bytes": st.st_size, "sha256": digest}
    from lmdisp.runs import write_json

    return write_json(folder / RECORD, {"files": files})


def verify(folder: Path | str) -> str | None:
    """None when `folder` matches its record (or has none); else the first thing wrong."""
    folder = Path(folder)
    try:
        files = json.loads((folder / RECORD).read_text())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {RECORD} is unreadable"
    for name, entry in files.items():
        problem = check_file(folder / name, entry["bytes"], entry.get("sha256"))
        if problem:
            return problem
    return None


def move_aside(folder: Path, why: str = "damaged") -> Path:
    """Rename `folder` to `.<why>-<name>-<time>` next to it (kept for a look, never read)."""
    target = folder.with_name(f".{why}-{folder.name}-{int(time.time())}")
    os.rename(folder, target)
    return target


def usable(folder: Path, what: str) -> bool:
    """`folder` matches its record; if not, it is moved aside with a warning (False: make it again)."""
    import logging

    wrong = verify(folder)
    if wrong is None:
        return True
    try:
        aside = move_aside(folder).name
    except FileNotFoundError:  # another process moved it first
        aside = "(moved by another process)"
    logging.getLogger("lmdisp").warning("%s %s is damaged (%s): moved aside to %s; making it again", what, folder,
                                        wrong, aside)
    return False


def space_error(exc: OSError, path: Path, need: int | None = None):
    """`lmdisp.space.no_space(...)` when `exc` is a lack of space, else None."""
    from lmdisp.space import is_no_space, no_space

    return no_space(exc, path, need) if is_no_space(exc) else None
