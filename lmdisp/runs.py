"""Run folders and the one results writer every subcommand uses.

A run folder holds everything one command invocation produced. Files are written
atomically (a temporary sibling, then `os.replace`), so a killed run never leaves a
half-written table behind, and a folder that already holds results is never reused
silently: a new run gets a new, timestamped name, and an explicit `--output` must be a
new or empty folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmdisp import locks
from lmdisp.errors import RunDirError
from lmdisp.jsontext import json_text

LOG_FILE = "lmdisp.log"  # the libraries' notices, written by the CLI (lmdisp.cli.session.RunLog)
LOCK_NAME = locks.LOCK_NAME  # held by the one process writing the folder (lmdisp.locks)

# Packages whose versions go into every manifest: the ones that change numbers.
_TRACKED_PACKAGES = (
    "lmdisp", "torch", "transformers", "datasets", "lm_eval", "accelerate",
    "numpy", "scipy", "pandas", "gguf",
)


def slugify(text: str, max_len: int = 60) -> str:
    """A file-system-safe name for a model spec or label (`Qwen/Qwen3-0.6B` -> `Qwen--Qwen3-0.6B`)."""
    text = text.replace("/", "--").replace(":", "-")
    text = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-")
    return (text or "run")[:max_len]


def _atomic_write(path: Path, write, need: int | None = None) -> Path:
    """Write through a temporary sibling renamed into place: a failed or killed write leaves
    the previous file (or none). Lack of space is one line (`lmdisp.space`), naming `need`."""
    from lmdisp.space import is_no_space, no_space

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(exc):
            raise no_space(exc, path, need or written + 1) from None
        raise
    return path


def _umask() -> int:
    """The umask, read without changing it (Linux); elsewhere set and put back (POSIX's only way)."""
    try:
        return int(re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M).group(1), 8)
    except (OSError, AttributeError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def write_text(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    return _atomic_write(path, lambda fh: fh.write(data), need=len(data))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json_text(data, indent=2) + "\n")


def write_table(df, path_stem: Path, *, float_format: str = "%.6g") -> list[Path]:
    """Write a pandas table as `<stem>.csv` and `<stem>.md` (both atomically)."""
    path_stem = Path(path_stem)
    csv = write_text(path_stem.with_suffix(".csv"), df.to_csv(index=False, float_format=float_format))
    md = write_text(path_stem.with_suffix(".md"), _markdown(df) + "\n")
    return [csv, md]


def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    out = _atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return out


def save_npz(path: Path, **arrays) -> Path:
    import numpy as np

    need = sum(np.asarray(a).nbytes for a in arrays.values())  # at most: compressed, it takes less
    return _atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays), need=need)


def _markdown(df) -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


# ----------------------------------------------------------------------------- provenance

def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return out


def git_commit(path: Path | None = None) -> str:
    """The commit of the lmdisp source tree (`+dirty` when it has uncommitted changes)."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- run folders

@dataclass
class RunDir:
    """A folder for one command's results, plus its manifest."""

    path: Path
    command: str
    started: float = field(default_factory=time.time)

    @classmethod
    def check(cls, command: str, *, root: Path | str = "results", output: Path | str | None = None) -> None:
        """Refuse, before any work, a run folder that `create` could not make or fill: an
        `output` that holds results, or a folder (or its nearest existing parent) that is not
        a writable folder. The probe writes and removes a file, so it also catches a
        read-only file system and permissions that `os.access` would misjudge (root)."""
        if output is not None:
            check_output_option(output)
            path = Path(output).expanduser()
            if path.is_dir():
                locks.check_free(path)  # another process writing there: name it
            if path.is_dir() and _holds_files(path):
                raise RunDirError(f"{path} already holds results; refusing to overwrite them: choose a new "
                                  "folder with -o NEW_FOLDER")
            ensure_writable(path)
        else:
            ensure_writable(Path(root).expanduser() / command)

    @classmethod
    def create(cls, command: str, name: str, *, root: Path | str = "results",
               output: Path | str | None = None) -> "RunDir":
        """Make a fresh run folder.

        With `output`, that exact folder is used (its parents are created); it must not
        already hold files. Otherwise `<root>/<command>/<UTC timestamp>_<name>` is created,
        with a numeric suffix if that name is taken.
        """
        cls.check(command, root=root, output=output)
        if output is not None:
            path = Path(output).expanduser()
            _mkdir(path, parents=True, exist_ok=True)
            locks.acquire(path, command)
            if _holds_files(path):  # another run filled it since `check`
                locks.release(path)
                raise RunDirError(f"{path} already holds results; refusing to overwrite them: choose a new "
                                  "folder with -o NEW_FOLDER")
            return cls(path, command).announce()
        base = Path(root).expanduser() / command
        _mkdir(base, parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            path = base / (f"{stamp}_{slugify(name)}" + (f"-{i + 1}" if i else ""))
            try:
                _mkdir(path)
                locks.acquire(path, command)
                return cls(path, command).announce()
            except FileExistsError:
                continue
        raise RunDirError(f"could not find a free run folder name under {base}")

    @classmethod
    def resume(cls, path: Path | str, command: str) -> "RunDir":
        """An existing run folder this process continues: its lock taken (`lmdisp.locks`)."""
        locks.acquire(path, command)
        return cls(Path(path), command).announce()

    @staticmethod
    def check_free(path: Path | str | None) -> None:
        """RunDirError naming the process that holds `path`'s lock, if another one does."""
        if path is not None:
            locks.check_free(Path(path).expanduser())

    def release(self) -> None:
        """Let another process write into the folder (`lmdisp.locks.release`)."""
        locks.release(self.path)

    def announce(self) -> "RunDir":
        """Log the folder (`extra={"run_folder": ...}`): the CLI then keeps its log file in it."""
        logging.getLogger("lmdisp.runs").info("run folder %s", self.path, extra={"run_folder": str(self.path)})
        return self

    def discard_if_empty(self, keep: tuple[str, ...] = ()) -> None:
        """Remove the folder when it holds nothing but the log (and the files named in `keep`):
        a refused or failed run leaves nothing behind."""
        import shutil

        names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        self.release()
        if names <= {LOG_FILE, locks.LOCK_NAME, *keep}:
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, *parts: str) -> Path:
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_manifest(self, config: Any, **extra) -> Path:
        """`manifest.json`: the resolved config, seed, versions, commit and wall time; and
        `config.yaml`, the config alone, which `--config` replays."""
        import yaml

        write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        data = {
            "command": self.command,
            "config": config,
            "wall_time_s": round(time.time() - self.started, 3),
            **provenance(),
            **extra,
        }
        return write_json(self.path / "manifest.json", data)


def check_output_option(output: str | Path | None) -> None:
    """`--output` as typed: not empty (`-o ''` is not `.`), not a file; missing parents are made."""
    if output is not None and not str(output).strip():
        raise RunDirError("--output '': an empty folder name; give a folder (-o NEW_FOLDER), or leave --output "
                          "out for a timestamped folder under --results-dir")
    if output is not None and Path(output).expanduser().exists() and not Path(output).expanduser().is_dir():
        raise RunDirError(f"--output {output} is a file, not a folder; choose a folder name with -o NEW_FOLDER")


def _holds_files(path: Path) -> bool:
    """Anything in the folder but its lock file."""
    return any(p.name != locks.LOCK_NAME for p in path.iterdir())


def _mkdir(path: Path, **kwargs) -> None:
    try:
        path.mkdir(**kwargs)
    except FileExistsError:
        if kwargs.get("exist_ok") and path.is_dir():
            return
        raise
    except OSError as exc:
        raise RunDirError(f"cannot create folder {path}: {exc.strerror or exc}") from None


def make_readable(folder: Path | str) -> None:
    """Give the files under `folder` the permissions of an ordinary file (0666 less the
    umask): some writers (safetensors through a temporary file) leave them private."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def ensure_writable(folder: Path | str) -> None:
    """RunDirError unless `folder` (or, when it does not exist yet, its nearest existing
    parent) is a folder this process can create files in. Nothing is left behind."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"cannot create folder {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lmdisp-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if existing == folder:
            raise RunDirError(f"cannot write to {folder}: {why}; choose another output folder") from None
        raise RunDirError(f"cannot create {folder}: {existing} is not writable ({why}); choose another "
                          "output folder") from None


@contextmanager
def peak_memory() -> Iterator[dict]:
    """Track the peak resident memory (CPU) and peak CUDA memory of the block, in MiB."""
    stats: dict[str, float] = {}
    _reset_peak_rss()
    try:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except ImportError:  # pragma: no cover
        cuda = False
    try:
        yield stats
    finally:
        stats["peak_rss_mib"] = round(_vm_hwm_kib() / 1024, 1)
        if cuda:
            stats["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _reset_peak_rss() -> None:
    """Start the kernel's peak-RSS counter (VmHWM) afresh, so the peak is this block's (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _vm_hwm_kib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ----------------------------------------------------------------------------- training runs

def is_training_config(data: dict) -> bool:
    return "model" in data and "loss" in data


def training_run_of(path: Path) -> Path | None:
    """The training run a folder belongs to (`<run>`, `<run>/final`, `<run>/checkpoints/
    checkpoint-N`, `<run>/evals/step-N`): the nearest of it and its two parents whose
    config.yaml is a training config."""
    from lmdisp.config import read_yaml

    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file() and is_training_config(read_yaml(folder / "config.yaml")):
            return folder
    return None


def read_training_run(run: Path) -> tuple[dict, dict]:
    """A training run's config (config.yaml) and report labels (from manifest.json)."""
    from lmdisp.config import read_yaml

    config = read_yaml(Path(run) / "config.yaml")
    try:
        labels = json.loads((Path(run) / "manifest.json").read_text()).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        labels = {}
    return config, labels
