"""A process of a distributed run that dies: the others say which one, and stop.

When a rank dies (killed, out of memory, its node lost), the others fail in their next
collective: at once when its sockets close (gloo: "Connection reset by peer"), else after
the collective timeout (`COLLECTIVE_TIMEOUT_S` in `lmdisp.train.run`, transformers'
`ddp_timeout`). `peers` records every rank's host and pid at the start; `lost` then names
the ranks on this host whose process is gone, and the last complete checkpoint, in one
line (`RankLost`), instead of the backend's traceback. torchrun still prints its own report.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from lmdisp.errors import LmdispError


class RankLost(LmdispError):
    """Another process of the job died or stopped answering; this one stops too."""


def peers(state) -> list[dict]:
    """Every rank's {rank, host, pid} (one all-gather at the start; [] in a single process)."""
    if state.num_processes < 2:
        return []
    import torch.distributed as dist

    me = {"rank": state.process_index, "host": socket.gethostname(), "pid": os.getpid()}
    everyone: list = [None] * state.num_processes
    dist.all_gather_object(everyone, me)
    return everyone


def is_collective_failure(exc: BaseException) -> bool:
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or (isinstance(exc, RuntimeError) and any(
        s in text for s in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer", "timed out")))


def _gone(pid: int) -> bool:
    """The process has ended (a zombie the launcher has not reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def lost(everyone: list[dict], me: int, exc: BaseException, timeout_s: int, checkpoints: Path,
         resume_cmd: str) -> RankLost:
    """The one-line error for rank `me` after a failed collective. SIGTERM from the launcher,
    which follows at once, is ignored from here on so that the line is printed."""
    from lmdisp.train.checkpoints import latest_complete

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import time

    host = socket.gethostname()
    for _ in range(30):  # the sockets close while the process is still exiting: give it 3 s to be gone
        dead = [p for p in everyone if p["host"] == host and p["rank"] != me and _gone(p["pid"])]
        if dead:
            break
        time.sleep(0.1)
    if dead:
        who = ", ".join(f"rank {p['rank']} (pid {p['pid']} on host {p['host']})" for p in dead)
        what = f"{who} died"
    else:
        what = (f"another rank stopped answering (its process is not on this host {host}, or it hung past the "
                f"{timeout_s} s collective timeout: {str(exc).splitlines()[0][:120]})")
    last = latest_complete(checkpoints)
    kept = f"the last complete checkpoint is {last}" if last else "no checkpoint was saved yet"
    return RankLost(f"{what}; rank {me} stopped too (collective timeout {timeout_s} s); {kept}; continue, under "
                    f"the same launcher, with: {resume_cmd}")
