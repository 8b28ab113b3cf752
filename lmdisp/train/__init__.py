"""Training with a hidden-state regulariser: `TrainConfig` (config), the regularisers
(losses), `DispersionTrainer` (trainer), active forgetting (forgetting), callbacks,
distillation (distill) and the run (`run_train`).

    from lmdisp.train import TrainConfig, run_train
    run_train(TrainConfig(model="random:tiny-gpt2", dataset="builtin", loss="dispersion",
                          train_tokens="200k", context_length=128, batch_size=8, grad_accum=1))

The regularisers alone (torch only) live in `lmdisp.train.losses`.
"""

_EXPORTS = {"TrainConfig": "config", "TrainRun": "run", "run_train": "run"}

import importlib

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Exports are imported on first use, so importing the package stays light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
