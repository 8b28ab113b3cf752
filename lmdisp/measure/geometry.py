"""Per-sequence geometry statistics beyond the mean cosine (opt-in with `--metrics`).

Each function takes one batch of token matrices, `h` of shape [B, S, d] (the raw activations
of one layer) or `zn` (the same rows normalised, z_i / max(||z_i||, 1e-3)), and returns one
value per sequence, shape [B]. The accumulator averages them over repetitions.

- `entropy`, `variance` (from the singular values s_k of Zn, not centred: a perfect cone is
  rank one). Entropy H = -sum_k p_k log p_k with p_k = s_k / sum_j s_j; the effective rank is
  exp(H) (Roy & Vetterli 2007, "The effective rank"). Maximum explainable variance
  s_1^2 / sum_k s_k^2, the share of the energy along the top direction.
- `centred`: centred cosine. Remove the sequence's mean token vector, mu = (1/S) sum_i z_i,
  from every raw token vector, normalise the rows and take the mean of all entries of the
  cosine matrix (diagonal included, as for m_l): ||(1/S) sum_i u_i||^2 with
  u_i = (z_i - mu) / max(||z_i - mu||, 1e-3). A common offset (a shared mean direction, which
  inflates the plain mean cosine; Ethayarajh 2019, Timkey & van Schijndel 2021) no longer
  counts; what remains is similarity beyond the shared direction.
- `isoscore`: IsoScore (Rudman, Gillman, Rayne & Eickhoff 2022, "IsoScore: measuring the
  uniformity of embedding space utilization", Findings of ACL). With the variances
  lambda_1..lambda_d of the raw token vectors along their principal axes (the eigenvalues of
  the d x d sample covariance, zeros included when S - 1 < d):
  lambda_hat = sqrt(d) lambda / ||lambda||, defect delta = ||lambda_hat - 1|| / sqrt(2(d - sqrt d)),
  IsoScore = ((d - delta^2 (d - sqrt d))^2 - d) / (d (d - 1)), in [0, 1]: 1 = every
  dimension used equally (isotropic), 0 = one dimension. Rotation and scale invariant.
- `rogue`: share of the cosine carried by the top-k dimensions (rogue dimensions; Timkey &
  van Schijndel 2021, "All bark and no bite", EMNLP). The cosine decomposes over dimensions,
  cos(z_a, z_b) = sum_i zn_ai zn_bi, so the mean of all entries of one sequence's cosine
  matrix is sum_i CC_i with CC_i = ((1/S) sum_a zn_ai)^2 >= 0, dimension i's contribution.
  The statistic is the share of the k largest CC_i: sum_{top k} CC_i / sum_i CC_i. Near 1 =
  a few dimensions (massive activations) make the tokens look similar.
"""

from __future__ import annotations

import math

import torch

SVD_METRICS = ("entropy", "variance")
METRICS = ("entropy", "variance", "centred", "isoscore", "rogue")
NORM_EPS = 1e-3


def normalize_rows(z: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """z_i / max(||z_i||, eps) along the last dimension, computed in float32."""
    z = z.float()
    return z / z.norm(dim=-1, keepdim=True).clamp_min(eps)


def singular_value_metrics(zn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy of normalised singular values and top-direction variance share, per matrix."""
    s = torch.linalg.svdvals(zn.float())
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
    energy = s.square()
    return {"entropy": entropy, "variance": energy[..., 0] / energy.sum(-1).clamp_min(1e-12)}


def centred_cosine(h: torch.Tensor) -> torch.Tensor:
    """Mean of all entries of the cosine matrix of the mean-removed token vectors, per sequence."""
    h = h.float()
    u = normalize_rows(h - h.mean(dim=-2, keepdim=True))
    return u.mean(dim=-2).square().sum(-1)


def isoscore(h: torch.Tensor) -> torch.Tensor:
    """IsoScore of each sequence's token cloud (rows of h), in [0, 1]."""
    h = h.double()
    centred = h - h.mean(dim=-2, keepdim=True)
    s, d = h.shape[-2:]
    # principal variances (up to the common factor 1/(S-1), which cancels): the eigenvalues of
    # the smaller Gram matrix, in float64 (an eigensolver on S x S is ~2x faster than an SVD)
    gram = centred @ centred.transpose(-1, -2) if s <= d else centred.transpose(-1, -2) @ centred
    var = torch.linalg.eigvalsh(gram).clamp_min(0)
    if var.shape[-1] < d:                                            # the other axes have zero variance
        var = torch.nn.functional.pad(var, (0, d - var.shape[-1]))
    if d < 2:
        return torch.ones(h.shape[:-2], device=h.device, dtype=torch.float64)
    var_hat = math.sqrt(d) * var / var.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    defect = (var_hat - 1).norm(dim=-1) / math.sqrt(2 * (d - math.sqrt(d)))
    return ((d - defect.square() * (d - math.sqrt(d))).square() - d) / (d * (d - 1))


def dimension_contributions(zn: torch.Tensor) -> torch.Tensor:
    """CC_i = ((1/S) sum_a zn_ai)^2, shape [B, d]; sums to the sequence's mean cosine."""
    return zn.mean(dim=-2).square()


def rogue_share(zn: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the mean cosine carried by the k dimensions contributing most, per sequence."""
    cc = dimension_contributions(zn)
    top = cc.topk(min(k, cc.shape[-1]), dim=-1).values.sum(-1)
    return top / cc.sum(-1).clamp_min(1e-12)


def batch_metrics(h: torch.Tensor, zn: torch.Tensor, metrics, top_k: int = 3) -> dict[str, torch.Tensor]:
    """Every requested metric for one layer of one batch: name -> [B]."""
    out: dict[str, torch.Tensor] = {}
    if any(m in SVD_METRICS for m in metrics):
        out.update(singular_value_metrics(zn))
    if "centred" in metrics:
        out["centred"] = centred_cosine(h)
    if "isoscore" in metrics:
        out["isoscore"] = isoscore(h)
    if "rogue" in metrics:
        out["rogue"] = rogue_share(zn, top_k)
    return {m: out[m] for m in metrics}
