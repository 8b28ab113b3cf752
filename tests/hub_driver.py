"""Run a list of `lmdisp` commands in one fresh Python process against the test hub
(`tests/hubserver.py`): the environment (HF_ENDPOINT, timeouts, caches) is set by the caller
before this process starts, so huggingface_hub, transformers and datasets read it at import
as they do for a user; one process saves the torch import per command.

    python tests/hub_driver.py steps.json results.json

Each step: {"name", "argv", "faults"}: the faults are posted to the server first; the result
holds the exit code, stdout, stderr (a traceback that escapes `main` is written there, as the
console script would), the requests the server saw and the seconds taken. In-memory caches
of the clients (HfFileSystem instances, their listings) are cleared between steps, as a new
process would start.
"""

import contextlib
import io
import json
import os
import sys
import time
import traceback
import urllib.request


def _call(path: str, data=None):
    url = os.environ["HF_ENDPOINT"] + path
    body = None if data is None else json.dumps(data).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST" if body else "GET"),
                                timeout=10) as resp:
        return json.loads(resp.read())


def run_step(main, step: dict) -> dict:
    from huggingface_hub import HfFileSystem

    HfFileSystem.clear_instance_cache()
    _call("/_faults", step.get("faults") or [])
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["lmdisp", *map(str, step["argv"])]
    start, code = time.perf_counter(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the console script would print
            traceback.print_exc()
            code = 1
    stats = _call("/_stats")
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "seconds": time.perf_counter() - start,
            "requests": stats["requests"], "log": stats["log"], "faults": stats["faults"],
            "cache": _files(os.environ["HF_HOME"])}


def _files(root: str) -> dict[str, int]:
    """Every file under `root` (the HF cache) and its size: what a later run could read."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.path.getsize(path) if os.path.exists(path) else -1
    return found


def main() -> None:
    steps_file, results_file = sys.argv[1:3]
    steps = json.loads(open(steps_file).read())
    from lmdisp.cli.main import main as lmdisp_main

    results = {}
    for step in steps:
        results[step["name"]] = run_step(lmdisp_main, step)
        with open(results_file, "w") as fh:  # written after each step: a hang still leaves the earlier ones
            json.dump(results, fh)
    _call("/_faults", [])


if __name__ == "__main__":
    main()
