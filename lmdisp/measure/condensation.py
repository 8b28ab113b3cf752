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

Optional geometry metrics (`metrics=("entropy", "variance")`), each from the singular
values s_k of the normalised token matrix Z_hat (not centred: a perfect cone is rank one):

- `entropy`: singular-value entropy H = -sum p_k log p_k, p_k = s_k / sum s; the effective
  rank is exp(H) (Roy & Vetterli 2007). Lower = more condensed.
- `variance`: maximum explainable variance s_1^2 / sum s_k^2, the share of the token
  matrix's energy along its top direction. Higher = more condensed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

NORM_EPS = 1e-3
METRICS = ("entropy", "variance")


def normalize_rows(z: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """z_i / max(||z_i||, eps) along the last dimension, computed in float32."""
    z = z.float()
    return z / z.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine_matrix(z: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """C = Z_hat Z_hat^T clipped to [-1, 1], for z of shape [..., S, d]."""
    zn = normalize_rows(z, eps)
    return (zn @ zn.transpose(-1, -2)).clamp_(-1.0, 1.0)


def singular_value_metrics(zn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy of normalised singular values and top-direction variance share, per matrix."""
    s = torch.linalg.svdvals(zn.float())
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    energy = s.square()
    return {"entropy": entropy, "variance": energy[..., 0] / energy.sum(-1).clamp_min(1e-12)}


@dataclass
class CondensationResult:
    """What one model's measurement produced; layer 0 = embedding output."""

    mean_matrices: np.ndarray               # (L+1, S, S) float32, the paper's M_l
    rep_means: np.ndarray                   # (R, L+1): m_l of each repetition
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (R, L+1)
    logits_matrix: np.ndarray | None = None  # (S, S) mean over repetitions, if requested
    logits_rep_means: np.ndarray | None = None

    @property
    def layer_means(self) -> np.ndarray:
        """m_l = mean of all entries of M_l (diagonal included)."""
        return self.mean_matrices.mean(axis=(1, 2), dtype=np.float64)

    @property
    def num_repetitions(self) -> int:
        return self.rep_means.shape[0]


class CondensationAccumulator:
    """Running sums of cosine matrices per layer; feed it hidden states batch by batch."""

    def __init__(self, metrics: Sequence[str] = ()):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
        self.metrics = tuple(metrics)
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
            for name, value in (singular_value_metrics(zn).items() if self.metrics else ()):
                if name in extra:
                    extra[name][:, layer] = value
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
        self.count = 0  # the sums are means now: further updates would be wrong
        self.sum = self.logits_sum = None
        return CondensationResult(
            mean_matrices=mean,
            rep_means=torch.cat(self._rep_means).double().numpy(),
            extra={m: torch.cat(v).double().numpy() for m, v in self._extra.items()},
            logits_matrix=logits,
            logits_rep_means=torch.cat(self._logit_means).double().numpy() if self._logit_means else None,
        )


def trend(layer_means: np.ndarray) -> dict[str, float]:
    """Spearman rho and Kendall tau (with p-values) of m_l against the layer index."""
    from scipy import stats

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
