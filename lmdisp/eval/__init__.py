"""Benchmark evaluation with lm-evaluation-harness: the settings and presets (`config`),
the harness calls (`harness`), the per-run result tables (`results`) and the paper-style
tables over many runs (`report`). Never imports `lmdisp.train`.

    from lmdisp.eval import load_evaluate_config, run_evaluate
    run = run_evaluate(load_evaluate_config("paper", {"model": "results/midtrain/<run>"}))
"""

from lmdisp import lazy_exports

_EXPORTS = {"EvaluateConfig": "config", "load_evaluate_config": "config", "run_evaluate": "harness",
            "ReportConfig": "report", "run_report": "report"}

__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
