"""Condensation metrics: cosine-similarity matrices per layer, streamed over repetitions.

For one sequence and layer l with hidden states Z (S tokens x d), rows are normalised by
max(||z_i||, 1e-3) and C_l = Z_hat Z_hat^T (S x S, clipped to [-1, 1]). The paper averages C_l
over R repetitions into the mean matrix M_l and summarises it by m_l = mean of all entries
of M_l (diagonal included), whose rank correlation with the layer index (Spearman rho,
Kendall tau) measures condensation: positive = cosine similarity grows with depth.

`CondensationAccumulator` keeps one running sum per layer on the model's device, so memory
does not grow with R. Two identities keep it fast:

- sum_b Z_b Z_b^T over a batch is one matrix product (one `addmm_` per layer);
- the mean of one repetition's C_l is || mean_i z_hat_i ||^2, an O(S d) quantity, which
  gives the spread of m_l over repetitions without materialising each C_l.

Clipping to [-1, 1] only removes float rounding (|cos| <= 1 in exact arithmetic), so it is
applied to the mean matrix once at the end; the result equals the mean of clipped matrices
to float32 rounding.

Optional geometry metrics (`metrics=(...)`, see `lmdisp.measure.geometry` for each formula and
reference): `entropy` (effective rank), `variance` (maximum explainable variance), `centred`
(centred cosine), `isoscore` (IsoScore) and `rogue` (share of the cosine in the top-k
dimensions). Each is one value per repetition and layer, shape (R, L+1).

Positions, from the mean matrices alone (no extra pass): `distance_profile` gives, per layer,
the mean of M_l[i, j] over all pairs with |i - j| = delta, for delta = 0..S-1; `first_token_stats`
gives the first position's mean similarity to the others, (1/(S-1)) sum_{j>0} M_l[0, j], next
to the mean of M_l without the first row and column (how much one token, often an attention
sink with massive activations, moves m_l).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from lmdisp.measure.geometry import (METRICS, NORM_EPS, batch_metrics, dimension_contributions, normalize_rows,
                                     singular_value_metrics)

__all__ = ["METRICS", "NORM_EPS", "normalize_rows", "singular_value_metrics", "cosine_matrix",
           "CondensationResult", "CondensationAccumulator", "trend", "last_n_means", "layer_histograms",
           "distance_profile", "first_token_stats"]


def cosine_matrix(z: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """C = Z_hat Z_hat^T clipped to [-1, 1], for z of shape [..., S, d]."""
    zn = normalize_rows(z, eps)
    return (zn @ zn.transpose(-1, -2)).clamp_(-1.0, 1.0)


@dataclass
class CondensationResult:
    """What one model's measurement produced; layer 0 = embedding output."""

    mean_matrices: np.ndarray               # (L+1, S, S) float32, the paper's M_l
    rep_means: np.ndarray                   # (R, L+1): m_l of each repetition
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (R, L+1)
    logits_matrix: np.ndarray | None = None  # (S, S) mean over repetitions, if requested
    logits_rep_means: np.ndarray | None = None
    dim_contributions: list[np.ndarray] | None = None  # per layer, mean CC_i over repetitions (`rogue`)

    @property
    def layer_means(self) -> np.ndarray:
        """m_l = mean of all entries of M_l (diagonal included)."""
        return self.mean_matrices.mean(axis=(1, 2), dtype=np.float64)

    @property
    def num_repetitions(self) -> int:
        return self.rep_means.shape[0]


class CondensationAccumulator:
    """Running sums of cosine matrices per layer; feed it hidden states batch by batch."""

    def __init__(self, metrics: Sequence[str] = (), top_k: int = 3):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
        self.metrics = tuple(metrics)
        self.top_k = top_k
        self._cc_sum: list[torch.Tensor] | None = None
        self.sum: torch.Tensor | None = None
        self.logits_sum: torch.Tensor | None = None
        self.count = 0
        self._rep_means: list[torch.Tensor] = []
        self._logit_means: list[torch.Tensor] = []
        self._extra: dict[str, list[torch.Tensor]] = {m: [] for m in self.metrics}

    @torch.no_grad()
    def update(self, hidden_states: Sequence[torch.Tensor], logits: torch.Tensor | None = None) -> None:
        """Add one batch: `hidden_states` is the (L+1)-tuple of [B, S, d] tensors HF returns."""
        batch, seq = hidden_states[0].shape[:2]
        device = hidden_states[0].device
        if self.sum is None:
            self.sum = torch.zeros(len(hidden_states), seq, seq, device=device)
        if self.sum.shape[1:] != (seq, seq) or self.sum.shape[0] != len(hidden_states):
            raise ValueError(f"all repetitions must have the same shape; got {len(hidden_states)} x {seq} "
                             f"after {tuple(self.sum.shape)}")
        means = torch.empty(batch, len(hidden_states), device=device)
        extra = {m: torch.empty(batch, len(hidden_states), device=device) for m in self.metrics}
        for layer, h in enumerate(hidden_states):
            zn = normalize_rows(h.to(device))                               # [B, S, d]
            flat = zn.transpose(0, 1).reshape(seq, -1)                      # [S, B*d]
            self.sum[layer].addmm_(flat, flat.T)                            # += sum_b Z_b Z_b^T
            means[:, layer] = zn.mean(dim=1).square().sum(-1)
            for name, value in (batch_metrics(h.to(device), zn, self.metrics, self.top_k).items()
                                if self.metrics else ()):
                extra[name][:, layer] = value
            if "rogue" in self.metrics:
                self._add_contributions(layer, len(hidden_states), dimension_contributions(zn).sum(0))
        self._rep_means.append(means.cpu())
        for name in self.metrics:
            self._extra[name].append(extra[name].cpu())
        if logits is not None:
            zn = normalize_rows(logits.to(device))
            flat = zn.transpose(0, 1).reshape(seq, -1)
            if self.logits_sum is None:
                self.logits_sum = torch.zeros(seq, seq, device=device)
            self.logits_sum.addmm_(flat, flat.T)
            self._logit_means.append(zn.mean(dim=1).square().sum(-1).cpu())
        self.count += batch

    def _add_contributions(self, layer: int, n_layers: int, cc: torch.Tensor) -> None:
        if self._cc_sum is None:
            self._cc_sum = [None] * n_layers
        self._cc_sum[layer] = cc if self._cc_sum[layer] is None else self._cc_sum[layer] + cc

    def result(self) -> CondensationResult:
        """The means. Divides the running sums in place (no second S x S copy per layer), so
        call it once, after the last `update`."""
        if not self.count:
            raise ValueError("no repetitions were accumulated")
        with torch.inference_mode(self.sum.is_inference()):  # sums made under inference_mode
            mean = self.sum.div_(self.count).clamp_(-1.0, 1.0).cpu().numpy()
            logits = None
            if self.logits_sum is not None:
                logits = self.logits_sum.div_(self.count).clamp_(-1.0, 1.0).cpu().numpy()
        cc = None if self._cc_sum is None else [(c / self.count).double().cpu().numpy() for c in self._cc_sum]
        self.count = 0  # the sums are means now: further updates would be wrong
        self.sum = self.logits_sum = self._cc_sum = None
        return CondensationResult(
            dim_contributions=cc,
            mean_matrices=mean,
            rep_means=torch.cat(self._rep_means).double().numpy(),
            extra={m: torch.cat(v).double().numpy() for m, v in self._extra.items()},
            logits_matrix=logits,
            logits_rep_means=torch.cat(self._logit_means).double().numpy() if self._logit_means else None,
        )


def trend(layer_means: np.ndarray) -> dict[str, float]:
    """Spearman rho and Kendall tau (with p-values) of m_l against the layer index."""
    from scipy import stats

    if len(layer_means) < 3:  # no trend over fewer than 3 points (flagged by `tables.degenerate`)
        return {"spearman_rho": np.nan, "spearman_p": np.nan, "kendall_tau": np.nan, "kendall_p": np.nan}
    idx = np.arange(len(layer_means))
    rho = stats.spearmanr(idx, layer_means)
    tau = stats.kendalltau(idx, layer_means)
    return {"spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def last_n_means(layer_means: np.ndarray) -> list[float]:
    """Entry N-1 = mean of m_l over the last N layers, for N = 1..L+1."""
    tail = np.asarray(layer_means, dtype=np.float64)[::-1]
    return (np.cumsum(tail) / np.arange(1, len(tail) + 1)).tolist()


def layer_histograms(mean_matrices: np.ndarray, bins: int = 128) -> np.ndarray:
    """Density histogram of the entries of each M_l on [-1, 1] (the Figure 2a heatmap)."""
    return np.stack([np.histogram(m.ravel(), bins=bins, range=(-1, 1), density=True)[0]
                     for m in mean_matrices])


def distance_profile(mean_matrices: np.ndarray) -> np.ndarray:
    """(L+1, S): entry [l, delta] = mean of M_l[i, j] over the pairs with |i - j| = delta."""
    n_layers, seq, _ = mean_matrices.shape
    offsets = np.abs(np.arange(seq)[:, None] - np.arange(seq)[None, :]).ravel()
    counts = np.bincount(offsets, minlength=seq)
    return np.stack([np.bincount(offsets, weights=m.ravel().astype(np.float64), minlength=seq) / counts
                     for m in mean_matrices])


def first_token_stats(mean_matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer: the first position's mean similarity to the others, and m_l without it."""
    m = mean_matrices.astype(np.float64)
    return {"first_token_cos": m[:, 0, 1:].mean(axis=1), "mean_cos_without_first": m[:, 1:, 1:].mean(axis=(1, 2))}
