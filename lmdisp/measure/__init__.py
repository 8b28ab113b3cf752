"""Measuring embedding condensation: the maths (`condensation`), the settings (`config`) and
the run (`run`).

    from lmdisp.measure import MeasureConfig, run_measure
    run = run_measure(MeasureConfig(models=["smollm2-135m"], dataset="builtin", repetitions=10))
"""

from lmdisp import lazy_exports

_EXPORTS = {"MeasureConfig": "config", "MeasureRun": "run", "run_measure": "run"}

__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
