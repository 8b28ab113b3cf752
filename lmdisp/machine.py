"""What this machine offers: devices, dtypes, and the lmdisp cache folder.

Each is checked before any work, so that a device the machine lacks (`--device mps` on Linux)
or a cache it cannot write (`LMDISP_CACHE` on a read-only disk) is one line naming what to
type instead, not a traceback after minutes of loading.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from lmdisp.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = r"auto|cpu|mps|(cuda|xpu|npu)(:\d+)?"  # what torch.device accepts, plus auto
CHECKPOINT_DTYPE = "checkpoint"  # internal: load in the dtype the checkpoint's config names
_NAMES = {"cuda": "CUDA", "mps": "MPS (Apple GPU)", "xpu": "XPU (Intel GPU)", "npu": "NPU (Ascend)"}


def cache_dir() -> Path:
    return Path(os.environ.get("LMDISP_CACHE", Path.home() / ".cache" / "lmdisp"))


def writable_cache(folder: Path, setting: str = "set LMDISP_CACHE to a folder you can write") -> Path:
    """Create `folder` (a cache folder) if needed and check that files can be written in it;
    a ConfigError naming the folder and `setting` (what to change) otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lmdisp-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write the cache folder {folder} ({exc.strerror or exc}); {setting}") from None
    return folder


def device_available(kind: str, index: int | None = None) -> bool:
    """Whether torch can use devices of `kind` (cuda, mps, xpu, npu), and device `index` of them."""
    import torch

    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        return bool(backend and backend.is_available()) and not index
    module = getattr(torch, kind, None)
    try:
        if module is None or not module.is_available():
            return False
        return index is None or index < module.device_count()
    except (AttributeError, RuntimeError):  # a backend torch was built without
        return False


def resolve_device(device: str = "auto") -> str:
    """`auto`: a CUDA GPU, else Apple's MPS, else the CPU. An explicit device the machine lacks
    is refused in one line (torch would raise deep inside the first `.to(device)`)."""
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ConfigError(f"--device {device!r}: choose auto, cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return device
    if device != "auto":
        kind, _, index = device.partition(":")
        if not device_available(kind, int(index) if index else None):
            what = f"{_NAMES[kind]} device {index}" if index and device_available(kind) else _NAMES[kind]
            raise ConfigError(f"--device {device}: {what} is not available on this machine; use --device cpu "
                              "(or auto: a GPU when there is one, else the CPU)")
        return device
    if device_available("cuda"):
        return "cuda"
    if device_available("mps"):
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """`auto` (on every command): the checkpoint's own dtype, as transformers' and lm-eval's
    dtype="auto" (transformers reads the config's torch_dtype; random:<config> models: float32)."""
    import torch

    if dtype in (CHECKPOINT_DTYPE, "auto"):
        return "auto"
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)
