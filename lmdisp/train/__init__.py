"""Training with a hidden-state regulariser: `TrainConfig` (config), the regularisers
(losses), `DispersionTrainer` (trainer), active forgetting (forgetting), callbacks,
distillation (distill) and the run (`run_train`).

    from lmdisp.train import TrainConfig, run_train
    run_train(TrainConfig(model="random:tiny-gpt2", dataset="builtin", loss="dispersion",
                          train_tokens="200k", context_length=128, batch_size=8, grad_accum=1))

The regularisers alone (torch only) live in `lmdisp.train.losses`.
"""

from lmdisp import lazy_exports

_EXPORTS = {"TrainConfig": "config", "TrainRun": "run", "run_train": "run"}

__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
