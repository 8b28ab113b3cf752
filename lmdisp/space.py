"""A write that fails for lack of space: one line naming the path and what it needed.

`ENOSPC` (no space left on the device), `EDQUOT` (a quota) and `EFBIG` (a file-size limit,
`ulimit -f`; Python ignores SIGXFSZ, so the write fails instead of killing the process)
become `lmdisp.errors.DiskFull`. Every writer that lmdisp reads back later writes to a
temporary name and renames it into place when complete (`lmdisp.runs`, the token shards,
the GGUF cache), and a checkpoint whose save failed is removed, so what such a failure
leaves behind is never read as data.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from lmdisp.errors import DiskFull

NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(path: Path | str) -> int | None:
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def no_space(exc: OSError, path: Path | str, need: int | None = None, then: str = "") -> DiskFull:
    """The one-line error for a write to `path` that failed with `exc` (see `is_no_space`)."""
    why = "the file-size limit (ulimit -f) was reached" if exc.errno == errno.EFBIG else \
        "a disk quota was reached" if exc.errno == errno.EDQUOT else "no space left on the device"
    free = None if exc.errno == errno.EFBIG else free_bytes(path)  # a per-file limit: free space is beside the point
    parts = [f"cannot write {path}: {why}"]
    if need:
        parts.append(f"it needs about {human(need)}" + (f", {human(free)} are free there" if free is not None else ""))
    parts.append("nothing half-written was kept" + (f"; {then}" if then else ""))
    return DiskFull("; ".join(parts))


def unnamed_no_space(exc: BaseException) -> str | None:
    """The line for a lack of space that reached the CLI without a `DiskFull` (a log append,
    lm-eval's SQLite request cache): what failed and what to do; None for anything else."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        where, why = "lm-eval's request cache", "no space left on the device"
    elif is_no_space(exc):
        where = exc.filename or "a file"
        why = "the file-size limit (ulimit -f) was reached" if exc.errno == errno.EFBIG else \
            "a disk quota was reached" if exc.errno == errno.EDQUOT else "no space left on the device"
    else:
        return None
    return (f"cannot write {where}: {why}; free space and run the command again (a training run continues with "
            "--resume, an evaluation with the same --output)")
