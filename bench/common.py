"""Shared by the bench scripts: the machine's name and load, how a ratio measured over
interleaved repeats is reported (its spread, and a verdict that says "within noise" when the
spread covers the target), and the README block each one fills when asked (`--readme`, which
`make bench README=1` passes)."""

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


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (other work on the machine slows every method alike only
    on average: a benchmark block names the load it ran under)."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def spread(values) -> dict:
    """min / median / max (and n) of a ratio measured once per interleaved round."""
    import statistics

    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def verdict(s: dict, target: float, *, at_most: bool) -> str:
    """`met` when every round meets the target, `missed` when none does, `within noise` when
    the rounds straddle it; `not judged` from a single round (no spread to judge noise by)."""
    if s["n"] < 2:
        return "not judged (1 round)"
    ok = [v <= target if at_most else v >= target for v in (s["min"], s["max"])]
    return "met" if all(ok) else "missed" if not any(ok) else "within noise"


def show(s: dict, fmt: str = "{:.2f}x") -> str:
    """`1.01x [0.92, 1.17]`: the median over rounds and its range (just the value for one round)."""
    if s["n"] < 2:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}, {fmt.format(s['max'])}]"


def load_note(before, after) -> str:
    if not before:
        return "Load average: not recorded (this run predates it)."
    after = f", {after[0]:.2f} after" if after else ""
    return f"Load average (1 min) on the machine: {before[0]:.2f} before{after}."


def readme_flag(ap) -> None:
    """`--readme`: also fill the script's README block (off by default; `make ... README=1`)."""
    ap.add_argument("--readme", action="store_true", help="also replace this benchmark's block in README.md")


def rendered(output: str | Path) -> dict:
    """The report a previous run saved (`<output>.json`), to render again in the current format."""
    import json

    return json.loads(Path(output).with_suffix(".json").read_text())


def publish(name: str, report: dict, markdown: str, output: str | Path, *, readme: bool = False) -> None:
    """Write `<output>.json` (every figure) and `<output>.md` (the table) atomically, fill the
    README block `name` only when asked (`--readme`), and print the table."""
    from lmdisp.runs import write_json, write_text

    out = Path(output)
    write_json(out.with_suffix(".json"), report)
    write_text(out.with_suffix(".md"), markdown)
    if readme:
        update_readme(name, markdown)
    print(markdown)
