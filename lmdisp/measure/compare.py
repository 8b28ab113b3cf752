"""Layer-by-layer comparison of two models on the same texts: linear CKA (Kornblith, Norouzi,
Lee & Hinton 2019, "Similarity of neural network representations revisited", ICML).

For one text, X (S x d1) and Y (S x d2) are the two models' token vectors at a pair of layers,
each column-centred over the S tokens (Xc = X - 1 mean(X)). With the S x S Gram matrices
K = Xc Xc^T and G = Yc Yc^T,

    CKA(X, Y) = <K, G>_F / (||K||_F ||G||_F) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),

in [0, 1], invariant to orthogonal transforms and isotropic scaling of either model's vectors
(so a model and a rotated copy score 1; two unrelated random models score low).

Memory stays bounded because CKA is computed per repetition (per text, over its S tokens),
never over the pooled R x S tokens: the two models run in lockstep on each batch, the batch's
CKA per layer pair is reduced to one number per text, and only those (R, L+1) numbers are
kept; the reported value is their mean over repetitions (with a bootstrap interval like the
layer means). Pooled-token CKA would need d1 x d2 cross-covariances per layer, or both models'
activations for every text at once. The cost is one S x S Gram product per model and layer.

Layers are paired by depth: layer i of model A (of n_A) with layer round(i (n_B - 1) / (n_A - 1))
of model B, the identity when both have the same depth.
"""

from __future__ import annotations

import numpy as np
import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between x [B, S, d1] and y [B, S, d2], one value per sequence, shape [B]."""
    x = x.float() - x.float().mean(dim=-2, keepdim=True)
    y = y.float() - y.float().mean(dim=-2, keepdim=True)
    # scale each sequence to unit Frobenius norm first: CKA is scale invariant, float32 is not
    x = x / x.flatten(1).norm(dim=-1).clamp_min(1e-30)[:, None, None]
    y = y / y.flatten(1).norm(dim=-1).clamp_min(1e-30)[:, None, None]
    k = x @ x.transpose(-1, -2)
    g = y @ y.transpose(-1, -2)
    hsic = (k * g).sum(dim=(-1, -2))
    return hsic / (k.square().sum(dim=(-1, -2)).sqrt() * g.square().sum(dim=(-1, -2)).sqrt()).clamp_min(1e-30)


def layer_pairs(n_a: int, n_b: int) -> list[tuple[int, int]]:
    """(i, j) for each layer i of A: j is B's layer at the same depth fraction."""
    if n_a == 1:
        return [(0, n_b - 1)]
    return [(i, int(round(i * (n_b - 1) / (n_a - 1)))) for i in range(n_a)]


class CkaAccumulator:
    """Per-repetition CKA for every layer pair of one site; `update` once per batch."""

    def __init__(self):
        self.pairs: list[tuple[int, int]] | None = None
        self._values: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
        if self.pairs is None:
            self.pairs = layer_pairs(len(a), len(b))
        values = torch.stack([linear_cka(a[i], b[j].to(a[i].device)) for i, j in self.pairs], dim=1)
        self._values.append(values.double().cpu())

    def result(self) -> np.ndarray:
        """(R, n_pairs) CKA per repetition and layer pair."""
        return torch.cat(self._values).numpy()
