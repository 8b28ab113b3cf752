"""Measuring embedding condensation: the maths (`condensation`), the settings (`config`) and
the run (`run`).

    from lmdisp.measure import MeasureConfig, run_measure
    run = run_measure(MeasureConfig(models=["smollm2-135m"], dataset="builtin", repetitions=10))
"""

_EXPORTS = {"MeasureConfig": "config", "MeasureRun": "run", "run_measure": "run"}

import importlib

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Exports are imported on first use, so importing the package stays light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
