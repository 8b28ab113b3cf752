"""Benchmark evaluation with lm-evaluation-harness: the settings and presets (`config`),
the harness calls (`harness`), the per-run result tables (`results`) and the paper-style
tables over many runs (`report`). Never imports `lmdisp.train`.

    from lmdisp.eval import load_evaluate_config, run_evaluate
    run = run_evaluate(load_evaluate_config("paper", {"model": "results/midtrain/<run>"}))
"""

_EXPORTS = {"EvaluateConfig": "config", "load_evaluate_config": "config", "run_evaluate": "harness",
            "ReportConfig": "report", "run_report": "report"}

import importlib

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Exports are imported on first use, so importing the package stays light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
