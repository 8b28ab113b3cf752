"""The plan's own steps, as command lines: `python -m lmdisp.paper.steps tasks|figure ...`.

    python -m lmdisp.paper.steps tasks --output DIR [--limit N]
    python -m lmdisp.paper.steps figure LAYOUT --output DIR [--labels a,b] [--heatmaps A,B] MEASURE_DIR ...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    from lmdisp.paper.figures import LAYOUTS

    p = argparse.ArgumentParser(prog="python -m lmdisp.paper.steps")
    sub = p.add_subparsers(dest="step", required=True)
    t = sub.add_parser("tasks", help="offline lm-eval tasks over the builtin corpus")
    t.add_argument("--output", required=True)
    t.add_argument("--limit", type=int, default=60, help="examples per task")
    f = sub.add_parser("figure", help="a paper figure from measure run folders")
    f.add_argument("layout", choices=LAYOUTS)
    f.add_argument("inputs", nargs="+")
    f.add_argument("--output", required=True)
    f.add_argument("--labels", default="")
    f.add_argument("--heatmaps", default="")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.step == "tasks":
        from lmdisp.paper.tasks import write_tasks

        write_tasks(Path(args.output), args.limit)
    else:
        from lmdisp.paper.figures import make_figure

        split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
        make_figure(args.layout, [Path(p) for p in args.inputs], Path(args.output), split(args.labels),
                    split(args.heatmaps))


if __name__ == "__main__":
    main()
