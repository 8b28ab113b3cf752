"""SIGTERM: what a scheduler sends before it kills a job (Slurm: at the time limit, on
preemption or `scancel`, then SIGKILL after its `KillWait`, 30 s by default).

Outside a training loop SIGTERM is turned into `lmdisp.errors.Terminated` (a
`KeyboardInterrupt`, so every command's Ctrl-C path keeps what it finished and says so),
and the CLI exits with 143 (128 + SIGTERM, what a process killed by SIGTERM reports).
Inside `trainer.train()` it only sets a flag: `lmdisp.train.callbacks.StopOnSigterm` then, at the end of the
optimiser step under way, has the Trainer write a checkpoint and stop, and `run_train`
raises `Terminated` naming the checkpoint and the command that continues the run. Under
`torchrun` the processes agree on the step to stop at (one all-reduce per step), so the
checkpoint is complete on every rank. The grace this needs is one optimiser step plus one
checkpoint save; with Slurm, `--signal=TERM@120` (or `B:TERM@120` with a batch script)
sends the signal earlier than the time limit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from lmdisp.errors import Terminated

_requested: list[int] = []  # signals received while in flag mode
_stopping: list[int] = []   # the step at which the processes agreed to stop


def requested() -> bool:
    """True once a SIGTERM arrived inside `graceful()`."""
    return bool(_requested)


def stopping() -> bool:
    """True once `StopOnSigterm` has stopped the training loop (callbacks skip end-of-run work)."""
    return bool(_stopping)


_owner: list[int] = []  # the pid that installed the handler


def _forked_child(signum) -> bool:
    """A process forked while the handler was installed (lm-eval's bootstrap Pool, DataLoader
    workers) inherits it; there SIGTERM must do what it does by default, end the process, or
    the parent's `Pool.terminate()` waits forever for a worker that only set a flag."""
    if _owner and os.getpid() != _owner[-1]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return True
    return False


def _raise(signum, frame):
    if _forked_child(signum):
        return
    if _in_finaliser(frame) or sys.exc_info()[1] is not None:
        # In a finaliser Python prints and drops the exception ("Exception ignored in") and the command
        # would run on; while an error already ends the command (a rank lost, a full disk) it would
        # replace the line that says why. Deliver the signal again once that has passed: 50 ms later
        # the command has either gone on (and stops then) or ended (and the process handler keeps it).
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    raise Terminated("stopped by SIGTERM")


def _in_finaliser(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _flag(signum, frame):
    if not _forked_child(signum):
        _requested.append(signum)


def _install(handler):
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set handlers; leave the process's own alone
    _owner[:] = [os.getpid()]
    return signal.signal(signal.SIGTERM, handler)


_pending: list[int] = []  # SIGTERMs received by the console script outside a command


def _defer(signum, frame):
    if not _forked_child(signum):
        _pending.append(signum)


@contextmanager
def process_handler():
    """The console script's SIGTERM handler for the moments outside a command (parsing its
    arguments, printing the line that says how it ended): the signal is kept, not acted on, so
    a scheduler's SIGTERM never cuts that line; a command that starts afterwards stops at once.
    The previous handler is put back after (an in-process caller keeps its own)."""
    _pending.clear()
    old = _install(_defer)
    try:
        yield
    finally:
        _pending.clear()
        if old is not None:
            signal.signal(signal.SIGTERM, old)


@contextmanager
def sigterm_raises():
    """SIGTERM raises `Terminated` in the main thread for the duration (the CLI's default); one
    kept by the console script before the command began stops it before it starts."""
    old = _install(_raise)
    try:
        if _pending:
            _pending.clear()
            raise Terminated("stopped by SIGTERM")
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


@contextmanager
def graceful():
    """SIGTERM only sets `requested()` for the duration (a training loop that stops itself)."""
    _requested.clear()
    _stopping.clear()
    old = _install(_flag)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def agreed(args) -> bool:
    """Has any process of the job been asked to stop? (one all-reduce when distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and args.world_size > 1):
        return requested()
    flag = torch.tensor([1.0 if requested() else 0.0], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def stop_at(step: int) -> None:
    _stopping.append(step)
