"""The one exception type the CLI turns into a single line and a non-zero exit.

Library code raises `LmdispError` (or a subclass) for anything the user can fix: bad
options, a model that cannot be found, a corpus that is too small. Anything else is a bug
and keeps its traceback.
"""


class LmdispError(Exception):
    """A user-facing error: the message is the whole story, no traceback needed."""


class ConfigError(LmdispError):
    """An option or configuration value is invalid."""


class ModelLoadError(LmdispError):
    """A model or tokenizer could not be resolved or loaded."""


class DataError(LmdispError):
    """A corpus could not be loaded or does not hold enough text."""


class RunDirError(LmdispError):
    """A run folder cannot be created without losing earlier results."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and how to continue. `output`: the
    folder that `--output` must name to continue (the CLI turns it into the exact command)."""

    def __init__(self, message: str = "", output=None, hint: str | None = None):
        super().__init__(f"{message}; {hint}" if hint else message)
        self.message, self.output = message, output  # the CLI puts the exact command in place of `hint`


class Terminated(Interrupted):
    """SIGTERM (a scheduler's notice before it kills the job, `lmdisp.preempt`): what was
    kept and how to continue; the CLI exits with `exit_code` (128 + SIGTERM)."""

    exit_code = 143


class DiskFull(LmdispError):
    """A write failed for lack of space (or a file-size limit); nothing half-written is kept."""
