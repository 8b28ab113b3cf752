"""What lm-eval shows while it runs. Progress within a task: requests answered out of requests
asked, as lm-eval answers them; and its `git describe` kept off the terminal.

`ProgressLM` stands between `lm_eval.simple_evaluate` (and its request cache, `CachingLM`)
and the model. It hands each request list on to the model with lm-eval's own switch
`disable_tqdm=True` (no bar of its own on the terminal), and counts the answers through
lm-eval's cache hook, which the model calls once per answered request (the same hook that
commits answers to the request cache): no request is split, batched or scored differently,
so the numbers are exactly lm-eval's.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable

# (kind of request, answered, asked, answers per second)
RequestProgress = Callable[[str, int, int, float], None]


def progress_lm(lm, report: RequestProgress):
    """`lm` wrapped so that `report` hears of every answered request."""
    from lm_eval.api.model import LM

    class ProgressLM(LM):
        def __init__(self):
            super().__init__()
            self.inner, self.report = lm, report
            self.kind, self.done, self.total, self.start = "", 0, 0, time.perf_counter()
            self.set_cache_hook(lm.cache_hook)

        def set_cache_hook(self, cache_hook) -> None:
            counting = _CountingHook(cache_hook, self._answered)
            self.cache_hook = counting
            self.inner.set_cache_hook(counting)

        def _answered(self) -> None:
            self.done += 1
            if self.inner.rank != 0:  # one process reports (lm-eval's own bars do the same)
                return
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            self.report(self.kind, min(self.done, self.total), self.total, rate)

        def _call(self, kind: str, requests) -> list:
            self.kind, self.done, self.total, self.start = kind, 0, len(requests), time.perf_counter()
            if self.inner.rank == 0:
                self.report(kind, 0, self.total, 0.0)
            out = getattr(self.inner, kind)(requests, disable_tqdm=True)
            if self.done < self.total:  # answers the hook did not see (loglikelihood_rolling's windows)
                self.done = self.total - 1
                self._answered()
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False) -> list:
            return self._call("loglikelihood", requests)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
            return self._call("loglikelihood_rolling", requests)

        def generate_until(self, requests, disable_tqdm: bool = False) -> list:
            return self._call("generate_until", requests)

        def __getattr__(self, name: str) -> Any:  # tokenizer, batch sizes, model info ...
            if name == "inner":
                raise AttributeError(name)
            return getattr(self.inner, name)

    for name in ("device", "rank", "world_size", "tokenizer_name"):  # LM's own properties: the model's
        setattr(ProgressLM, name, property(lambda self, name=name: getattr(self.inner, name)))
    for name in ("all_gather", "gather_object", "barrier", "chat_template", "apply_chat_template"):
        setattr(ProgressLM, name, lambda self, *a, name=name, **k: getattr(self.inner, name)(*a, **k))
    return ProgressLM()


class _CountingHook:
    """lm-eval's `CacheHook`, counting the answers it is given."""

    def __init__(self, hook, answered: Callable[[], None]):
        self.hook, self.answered = hook, answered
        self.dbdict = getattr(hook, "dbdict", None)

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if self.hook is not None:
            self.hook.add_partial(attr, req, res)
        self.answered()


@contextmanager
def bootstrap_in_process():
    """lm-eval bootstraps the stderr of perplexity-type metrics in a `multiprocessing.Pool` it
    forks from this process; a fork of a process that holds torch's thread pools and other
    threads' locks can leave a worker stuck, and the pool's exit then waits on it forever (an
    evaluation seen hanging after its last bootstrap chunk). For the call only, set lm-eval's
    own switch, `DISABLE_MULTIPROC`, so the same resamples (same seeds per chunk, hence the
    same stderr) are drawn in this process; the variable is put back after."""
    import os

    old = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = old


@contextmanager
def quiet_git_describe():
    """lm-eval records `git describe` of the working directory and lets git print "fatal: not
    a git repository" to the terminal outside one: for the call only, ask git the same with its
    stderr captured (lm-eval has no switch for it); lm-eval's own function is put back after."""
    import subprocess

    import lm_eval.evaluator as evaluator

    def git_hash() -> str | None:
        try:
            out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    original = getattr(evaluator, "get_git_commit_hash", None)
    if original is None:
        yield
        return
    evaluator.get_git_commit_hash = git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original
