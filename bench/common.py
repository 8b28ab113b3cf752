"""Shared by the bench scripts: the machine's name, and the README block each one fills."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def update_readme(name: str, markdown: str, readme: Path = README) -> bool:
    """Replace the block for `name`; returns False (and changes nothing) if the markers are absent."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        return False
    from lmdisp.runs import write_text

    write_text(readme, pattern.sub(lambda m: m.group(1) + markdown.rstrip() + "\n" + m.group(2), text))
    return True


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device="cpu") -> str:
    """`NVIDIA H100 80GB HBM3` on a GPU, `<CPU model> (N cores)` otherwise."""
    import os

    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def publish(name: str, report: dict, markdown: str, output: str | Path, *, readme: bool = True) -> None:
    """Write `<output>.json` (every figure) and `<output>.md` (the table) atomically, fill the
    README block `name` when asked (the scripts do so only for their default output, so a
    trial run elsewhere leaves the README alone), and print the table."""
    from lmdisp.runs import write_json, write_text

    out = Path(output)
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown)
    if readme:
        update_readme(name, markdown)
    print(markdown)
