"""One writer per run folder: a lock file naming its holder.

A command that writes into a run folder (a new one, or one it continues with `--resume`)
holds `<folder>/.lmdisp.lock`: an exclusive `flock` on that file, whose content names the
holder (pid, host, command, start time). A second process that wants the folder finds
the lock held and is refused at start, with the holder's name. The kernel drops a
`flock` when its holder dies, however it dies (kill -9, a node lost on a shared file system
with NFSv4 locks): the file a killed run leaves behind is then free to take, and the
next run takes it over and says whose it was. A run that ends (finished, refused, failed,
interrupted) removes the file.

Within one process the lock is re-entrant (a run that evaluates into its own folder, a
test that runs two commands in turn); `release` drops it, and every lock still held is
dropped at interpreter exit.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import errno
import json
import logging
import os
import socket
from pathlib import Path

from lmdisp.errors import RunDirError

LOCK_NAME = ".lmdisp.lock"
_HELD: dict[Path, int] = {}  # folder (resolved) -> open file descriptor holding its flock
log = logging.getLogger("lmdisp")


def _key(folder: Path | str) -> Path:
    return Path(folder).expanduser().resolve()


def describe(holder: dict | None) -> str:
    """`pid 1234 on host node7, midtrain started 2026-12-01T02:30:00+00:00` (what is known)."""
    if not holder:
        return "a process that left no name"
    where = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    what = " ".join(str(holder[k]) for k in ("command",) if holder.get(k))
    when = f"started {holder['started']}" if holder.get("started") else ""
    return ", ".join(filter(None, [where, " ".join(filter(None, [what, when]))]))


def read_holder(folder: Path | str) -> dict | None:
    """The holder recorded in a folder's lock file (None when there is none or it is unreadable)."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None


def _try_flock(fd: int, shared: bool = False, tries: int = 1) -> bool:
    """Take the flock without waiting (`tries` > 1: a few attempts over ~0.5 s, so that a
    momentary probe by another process, `check_free`, is not mistaken for a holder)."""
    import fcntl
    import time

    for attempt in range(tries):
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


def _open_locked(path: Path) -> tuple[int | None, dict | None]:
    """(fd holding the flock, previous content) or (None, holder) when another process holds it.
    Retries when the file it locked was removed or replaced meanwhile (its holder released it)."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd, tries=10):
            os.close(fd)
            return None, read_holder(path.parent)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            raw = os.read(fd, 1 << 16)
            try:
                return fd, json.loads(raw) if raw.strip() else None
            except ValueError:
                return fd, {}
        os.close(fd)
    raise RunDirError(f"cannot lock {path}: it keeps being replaced")  # pragma: no cover


def acquire(folder: Path | str, command: str) -> None:
    """Hold `folder`'s lock for this process. RunDirError naming the holder when another live
    process holds it; a lock left by a dead process is taken over with a warning."""
    key = _key(folder)
    if key in _HELD:
        return
    try:
        fd, previous = _open_locked(key / LOCK_NAME)
    except OSError as exc:
        raise RunDirError(f"cannot lock {key}: {exc.strerror or exc}") from None
    if fd is None:
        raise RunDirError(f"{key} is in use by another lmdisp process ({describe(previous)}); wait for it to "
                          "end, or choose another --output")
    if previous is not None:
        log.warning("%s: taking over the lock left by %s, which is no longer running", key, describe(previous))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    _HELD[key] = fd


def check_free(folder: Path | str) -> None:
    """RunDirError naming the holder when another process holds `folder`'s lock (nothing kept)."""
    key = _key(folder)
    if key in _HELD or not (key / LOCK_NAME).exists():
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return
    try:
        if not _try_flock(fd, shared=True):  # shared: probes by several processes do not collide
            raise RunDirError(f"{key} is in use by another lmdisp process ({describe(read_holder(key))}); wait "
                              "for it to end, or choose another --output")
    finally:
        os.close(fd)  # closing drops a flock this probe took


def release(folder: Path | str) -> None:
    """Drop this process's lock on `folder` and remove the lock file (no-op if not held)."""
    fd = _HELD.pop(_key(folder), None)
    if fd is None:
        return
    try:
        (_key(folder) / LOCK_NAME).unlink(missing_ok=True)  # removed while still held: no window
    except OSError:
        pass
    os.close(fd)


def held(folder: Path | str) -> bool:
    return _key(folder) in _HELD


@atexit.register
def _release_all() -> None:
    for folder in list(_HELD):
        release(folder)
