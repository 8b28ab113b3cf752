"""Where the libraries' notices go during one command, and nothing changed after it.

By default the terminal shows lmdisp's progress and results only. Everything the libraries
log (transformers, datasets, lm-eval, peft, accelerate, Python warnings) goes to
`lmdisp.log` in the run folder, and also to the terminal with `--verbose`, which also brings
back their progress bars. Everything is set with the libraries' own switches (their loggers,
`disable_progress_bars()`), inside `cli_session`, which puts every one of them back as it
found it when the command returns: an in-process caller (a test, a notebook) keeps its
logging, warnings filters and progress bars. lm-eval draws a few tqdm bars it has no switch
for; `quiet_stderr` sends them to the log for the duration of a call, not by patching tqdm.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lmdisp.cli.ui import console
from lmdisp.runs import LOG_FILE

_LIBRARIES = ("transformers", "datasets", "huggingface_hub", "lm_eval", "lm-eval", "peft", "accelerate", "torch",
              "urllib3", "filelock", "fsspec", "evaluate", "py.warnings")
_VERBOSE = {"on": False}


class RunLog(logging.Handler):
    """Every log record, kept in memory until a run folder is announced (a record with
    `extra={"run_folder": path}`, logged by `lmdisp.runs`), then written to `<run>/lmdisp.log`."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.file = None

    def emit(self, record: logging.LogRecord) -> None:
        folder = getattr(record, "run_folder", None)
        if folder is not None and self.file is None:
            try:
                self.file = open(Path(folder) / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
                self.file.writelines(self.lines)
                self.lines = []
            except OSError:
                self.file = None
        text = self.format(record) + "\n"
        if self.file is not None:
            self.file.write(text)
            self.file.flush()
        else:
            self.lines.append(text)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        super().close()


class _Notes(logging.Handler):
    """lmdisp's own warnings (`logging.getLogger("lmdisp")`): one `note:` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        console.print(f"[yellow]note:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)


class _RetryNotes(logging.Handler):
    """The hub clients' retries (datasets' streamed reads: 20 tries, 5 s apart; huggingface_hub's
    downloads), which would otherwise wait minutes in silence: each one a `note:` line naming the
    library, so a user sees why a command waits and that it goes on by itself."""

    SIGNS = ("Retrying in", "Waiting ")

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        library = record.name.split(".", 1)[0]
        if library in ("datasets", "huggingface_hub") and any(s in record.getMessage() for s in self.SIGNS):
            from rich.markup import escape

            console.print(f"[yellow]note:[/] {library}: {escape(record.getMessage())}", highlight=False,
                          soft_wrap=True)


def _logger_state(logger: logging.Logger) -> tuple:
    return logger, logger.level, list(logger.handlers), logger.propagate


def _restore_logger(logger: logging.Logger, level: int, handlers: list, propagate: bool) -> None:
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in logger.handlers:
            logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = propagate


@contextmanager
def cli_session(verbose: bool = False) -> Iterator[RunLog]:
    """Route the libraries' notices to the run's log file (and the terminal with `verbose`)
    for the duration of one command; restore every logger, filter and switch afterwards."""
    for module in ("transformers.utils.logging", "datasets", "huggingface_hub"):
        try:  # imported now, so that the stderr handlers they add on import exist to be routed
            __import__(module)
        except ImportError:  # pragma: no cover
            pass
    libraries = _library_loggers()
    loggers = [logging.getLogger(), logging.getLogger("lmdisp"), *libraries]
    saved = [_logger_state(lg) for lg in loggers]
    log = RunLog()
    with contextlib.ExitStack() as undo, warnings.catch_warnings():
        undo.callback(lambda: [_restore_logger(*state) for state in saved])
        undo.callback(_VERBOSE.update, on=_VERBOSE["on"])
        _VERBOSE["on"] = verbose
        _route_logging(log, verbose, libraries)
        if getattr(logging, "_warnings_showwarning", None) is None:  # not captured yet: capture for the command
            logging.captureWarnings(True)
            undo.callback(logging.captureWarnings, False)
        warnings.simplefilter("default")
        _progress_bars(undo, enabled=verbose)
        yield log


def _library_loggers() -> list[logging.Logger]:
    """The libraries' loggers and their existing children (torch gives `torch._inductor`,
    `torch._dynamo`, ... stderr handlers of their own)."""
    names = {*_LIBRARIES, *(n for n in logging.root.manager.loggerDict if ".__" not in n  # torch.__trace: its own
                            and any(n.startswith(lib + ".") for lib in _LIBRARIES))}
    return [logging.getLogger(n) for n in sorted(names)]


def _route_logging(log: RunLog, verbose: bool, libraries: list[logging.Logger]) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(log)
    for lib in libraries:  # the libraries' own stderr handlers: their records now reach ours
        for h in list(lib.handlers):
            lib.removeHandler(h)
        lib.propagate = True
    own = logging.getLogger("lmdisp")
    own.setLevel(logging.INFO)
    for h in list(own.handlers):
        own.removeHandler(h)
    if verbose:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    else:
        own.addHandler(_Notes(logging.WARNING))
        root.addHandler(_RetryNotes())


def _progress_bars(undo: contextlib.ExitStack, enabled: bool) -> None:
    """The libraries' own progress-bar switches, each put back as it was."""
    if enabled:
        return
    try:
        from transformers.utils import logging as tlog

        if tlog.is_progress_bar_enabled():
            tlog.disable_progress_bar()
            undo.callback(tlog.enable_progress_bar)
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            undo.callback(datasets.enable_progress_bars)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.callback(enable_progress_bars)
    except ImportError:  # pragma: no cover
        pass


class _LinesToLog(io.TextIOBase):
    """A text stream whose complete lines go to the log (a progress bar's redraws, `\\r`-separated,
    leave their last state)."""

    def __init__(self):
        self.buffer_ = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_ += text
        *lines, self.buffer_ = self.buffer_.split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1].strip()
            if line:
                logging.getLogger("lmdisp.stderr").info(line)
        return len(text)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Without --verbose, what third-party code writes to `sys.stderr` during the block (lm-eval's
    tqdm bars, which have no switch) goes to the log file; `sys.stderr` is put back after."""
    if _VERBOSE["on"]:
        yield
        return
    with contextlib.redirect_stderr(_LinesToLog()):
        yield
