"""Regularisers on hidden states (the paper's section 2; docs/fidelity.md rows L), registered by name, plus the layer and
token selection around them.

Every loss is ``fn(h, mask=None, **options) -> scalar tensor`` with ``h`` [B, S, d] the hidden
states of one layer (or of several layers stacked along the batch) and ``mask`` [B, S]
(1 = real token, 0 = padding, None = all real). Conventions shared by all of them:

- padded positions are set to zero first and never enter a pair, so their values (even NaN)
  change neither the loss nor any gradient;
- the loss is computed per sequence, then averaged over the sequences with >= 2 real tokens,
  each weighing the same; with no such sequence the result is a zero still attached to the
  graph (``backward()`` works, all gradients are 0);
- the maths runs in float32 (float64 inputs stay float64, for gradcheck) with autocast off,
  so bf16/fp16 hidden states from a mixed-precision trainer are upcast;
- cos_ij = <z_i, z_j> / (max(||z_i||, eps) * max(||z_j||, eps)), eps = 1e-3 (as in `measure`).

From a trainer::

    hs = model(**batch, output_hidden_states=True).hidden_states
    reg = regularizer(hs, batch["attention_mask"], "dispersion", location="all", tau=1.0)
    loss = ce + 0.1 * reg
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from typing import Callable, NamedTuple, Sequence

import torch

from lmdisp.errors import ConfigError
from lmdisp.train.config import Location, canonical_loss

COS_EPS = 1e-3  # floor on ||z|| before normalising: the condensation metric's value
STD_EPS = 1e-5  # variance floor in decorrelation: a constant token vector stays finite
LOCATIONS = typing.get_args(Location)
LOSSES: dict[str, Callable[..., torch.Tensor]] = {}


def register(name: str) -> Callable:
    """Add a loss to `LOSSES` under `name` (dashed, as `--loss` spells it; also add it to
    `lmdisp.train.config.LossName` and `LOSS_OPTIONS`). The wrapper turns autocast off (the pairwise maths
    must not fall back to bf16 inside a mixed-precision trainer) and rejects unknown options
    with a `ConfigError`, so a typo in a config cannot be silently ignored."""

    def deco(fn: Callable) -> Callable:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        params = inspect.signature(fn).parameters.values()
        allowed = sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY)

        @functools.wraps(fn)
        def run(h: torch.Tensor, mask: torch.Tensor | None = None, **options) -> torch.Tensor:
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                valid = ", ".join(allowed) or "none"
                raise ConfigError(f"loss {name!r} has no option {', '.join(unknown)}; valid: {valid}")
            with torch.autocast(h.device.type, enabled=False):
                return fn(h, mask, **options)

        LOSSES[name] = run
        return run

    return deco


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The registered loss called `name`, spelt as the CLI does (`l2-repel`; `l2_repel` is read
    as the same name by `canonical_loss`); `ConfigError` listing the valid names otherwise."""
    key = canonical_loss(str(name))
    if key not in LOSSES:
        raise ConfigError(f"unknown regulariser {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[key]


# ---------------------------------------------------------------- shared pieces

class _Tokens(NamedTuple):
    z: torch.Tensor  # [B, S, d] padding zeroed, at least float32
    real: torch.Tensor  # [B, S] bool
    pairs: torch.Tensor  # [B, S, S] bool: both tokens real and i != j
    n: torch.Tensor  # [B] number of real tokens
    valid: torch.Tensor  # [B] bool: n >= 2, the sequences that count


def _real_mask(mask: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
    if h.dim() != 3:
        raise ValueError(f"hidden states must be [B, S, d], got shape {tuple(h.shape)}")
    if mask is None:
        return torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    if tuple(mask.shape) != tuple(h.shape[:2]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match hidden states {tuple(h.shape)}")
    return mask.to(h.device) != 0


def _tokens(h: torch.Tensor, mask: torch.Tensor | None) -> _Tokens:
    real = _real_mask(mask, h)
    z = h.to(torch.promote_types(h.dtype, torch.float32))
    z = torch.where(real[..., None], z, 0.0)  # where, not *: NaN padding must not leak
    off_diag = ~torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
    pairs = real[:, :, None] & real[:, None, :] & off_diag
    n = real.sum(1)
    return _Tokens(z, real, pairs, n, n >= 2)


def _cosine(z: torch.Tensor) -> torch.Tensor:
    zhat = z / z.norm(dim=-1, keepdim=True).clamp_min(COS_EPS)
    return zhat @ zhat.transpose(1, 2)


def _angular(cos: torch.Tensor, clamp: float) -> torch.Tensor:
    """D = arccos(c) / pi, c clamped to [-1 + clamp, 1 - clamp] in value only. arccos has an
    infinite slope at +-1; a plain clamp would zero the gradient of near-identical tokens, the
    very ones to push apart, so the gradient outside the band is the one at its edge."""
    c = cos + (cos.clamp(-1.0 + clamp, 1.0 - clamp) - cos).detach()
    return torch.arccos(c) / math.pi


def _pair_logsumexp(logits: torch.Tensor, pairs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per sequence log sum over `pairs` of exp(logits). Excluded pairs get -inf; sequences
    that do not count get all-zero logits (a logsumexp of only -inf has a NaN gradient)."""
    logits = logits.masked_fill(~pairs, float("-inf")).masked_fill(~valid[:, None, None], 0.0)
    return torch.logsumexp(logits.flatten(1), dim=1)


def _pair_mean(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Per sequence mean of `values` over `pairs` (0 for a sequence without pairs)."""
    return torch.where(pairs, values, 0.0).sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)


def _mean_over_sequences(per_seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # Sum of zeros when nothing counts: still a graph node, so backward() just gives zeros.
    return torch.where(valid, per_seq, 0.0).sum() / valid.sum().clamp_min(1)


def _log_count(count: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.log(count.clamp_min(1).to(dtype))


def _check(tau: float | None = None, clamp: float | None = None) -> None:
    if tau is not None and not tau > 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    if clamp is not None and not 0 < clamp < 1:
        raise ConfigError(f"clamp must be in (0, 1), got {clamp} (0 gives infinite arccos slopes)")


# ---------------------------------------------------------------- the regularisers

@register("dispersion")
def dispersion(h, mask=None, *, tau: float = 1.0, clamp: float = 0.1, log_mean: bool = False):
    """The paper's angular dispersion loss, per sequence over its real tokens i != j:
        D_ij = arccos(clip(cos_ij, -1 + clamp, 1 - clamp)) / pi   (straight-through clip)
        L = log sum_{i != j} exp(-D_ij / tau)         [- log(n (n - 1)) if log_mean]
    log_mean only shifts the value (by a constant per sequence length), not the gradient."""
    _check(tau=tau, clamp=clamp)
    t = _tokens(h, mask)
    per_seq = _pair_logsumexp(-_angular(_cosine(t.z), clamp) / tau, t.pairs, t.valid)
    if log_mean:
        per_seq = per_seq - _log_count(t.n * (t.n - 1), per_seq.dtype)
    return _mean_over_sequences(per_seq, t.valid)


TT_EPS = 1e-4  # the TorchTitan copy's epsilon: in the normalisation and inside the log-sum-exp


@register("dispersion-torchtitan")
def dispersion_torchtitan(h, mask=None, *, tau: float = 1.0, clamp: float = 0.01):
    """The dispersion loss as the authors' TorchTitan copy computes it for Table 5
    (docs/fidelity.md P6), per sequence over its real tokens i != j:
        z_i / (||z_i|| + 1e-4);  D_ij = arccos(clamp(cos_ij, -1 + clamp, 1 - clamp)) / pi
        L = log sum_{i != j} exp(-D_ij / tau + 1e-4) - log(n (n - 1))
    The clamp is a plain one (zero gradient outside the band), unlike `dispersion`'s
    straight-through clip; their band is 1e-2 (bf16 rounds 1 - 1e-4 to 1)."""
    _check(tau=tau, clamp=clamp)
    t = _tokens(h, mask)
    zhat = t.z / (t.z.norm(dim=-1, keepdim=True) + TT_EPS)
    cos = (zhat @ zhat.transpose(1, 2)).clamp(-1.0 + clamp, 1.0 - clamp)
    per_seq = _pair_logsumexp(-torch.arccos(cos) / math.pi / tau + TT_EPS, t.pairs, t.valid)
    return _mean_over_sequences(per_seq - _log_count(t.n * (t.n - 1), per_seq.dtype), t.valid)


@register("decorrelation")
def decorrelation(h, mask=None):
    """Each real token vector is standardised over its d features,
        zc_i = (z_i - mean(z_i)) / sqrt(var(z_i) + 1e-5)   (var unbiased, over features),
    Cov = Zc Zc^T / (d - 1) (token by token, so Cov_ii ~ 1), and
        L = mean over real i != j of Cov_ij^2."""
    t = _tokens(h, mask)
    dof = max(t.z.shape[-1] - 1, 1)
    zc = t.z - t.z.mean(-1, keepdim=True)
    zc = zc / torch.sqrt(zc.pow(2).sum(-1, keepdim=True) / dof + STD_EPS)
    cov = zc @ zc.transpose(1, 2) / dof
    return _mean_over_sequences(_pair_mean(cov.pow(2), t.pairs), t.valid)


def _l2_repel(h, mask, tau: float, lambda_norm: float, log_mean: bool, diagonal: bool):
    """Per sequence log sum over real pairs of exp(-||z_i - z_j||^2 / tau) (i = j included
    when `diagonal`), [- log(#pairs) if log_mean], + lambda_norm * mean(z^2), meaned."""
    _check(tau=tau)
    t = _tokens(h, mask)
    # Distances are translation invariant: centring first keeps the Gram-form
    # ||a||^2 + ||b||^2 - 2<a, b> accurate in float32 when all tokens share a large offset.
    centre = t.z.sum(1, keepdim=True) / t.n.clamp_min(1)[:, None, None]
    zc = torch.where(t.real[..., None], t.z - centre, 0.0)
    sq = zc.pow(2).sum(-1)
    dist2 = (sq[:, :, None] + sq[:, None, :] - 2 * zc @ zc.transpose(1, 2)).clamp_min(0)
    eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
    dist2 = dist2.masked_fill(eye, 0.0)  # exactly 0, not the Gram form's rounding
    pairs = t.real[:, :, None] & t.real[:, None, :] if diagonal else t.pairs
    per_seq = _pair_logsumexp(-dist2 / tau, pairs, t.valid)
    if log_mean:
        per_seq = per_seq - _log_count(t.n * t.n if diagonal else t.n * (t.n - 1), per_seq.dtype)
    norm = t.z.pow(2).sum((1, 2)) / (t.n.clamp_min(1) * t.z.shape[-1])
    return _mean_over_sequences(per_seq + lambda_norm * norm, t.valid)


@register("l2-repel")
def l2_repel(h, mask=None, *, tau: float = 1.0, lambda_norm: float = 0.1, log_mean: bool = False):
    """Euclidean repulsion with a norm penalty, as in the authors' code (`dispersion.py`,
    variant l2_repel), which every paper config uses. Per sequence over its real tokens:
        L = log sum_{i, j} exp(-||z_i - z_j||^2 / tau)   [- log(n^2) if log_mean]
            + lambda_norm * mean(z^2)   (mean over real tokens and features)
    The sum INCLUDES i = j: n terms exp(0) = 1. At real hidden-state scales (||z_i - z_j||^2
    >> tau) every off-diagonal term underflows next to them, the repulsion gradient vanishes
    and the loss acts as the norm penalty alone. `l2_repel_paper` is the paper's formula."""
    return _l2_repel(h, mask, tau, lambda_norm, log_mean, diagonal=True)


@register("l2-repel-paper")
def l2_repel_paper(h, mask=None, *, tau: float = 1.0, lambda_norm: float = 0.1, log_mean: bool = False):
    """The paper's l2-repel formula (Table 1): the same as `l2_repel` but over i != j only,
        L = log sum_{i != j} exp(-||z_i - z_j||^2 / tau)   [- log(n (n - 1)) if log_mean]
            + lambda_norm * mean(z^2).
    Without the diagonal the nearest pairs dominate the log-sum-exp at any scale: a strong
    repulsion (the fidelity audit measured ~1000x the CE gradient on SmolLM2 at lambda 0.1),
    unlike the authors' code. The norm term stops the tokens from escaping it by growing without bound."""
    return _l2_repel(h, mask, tau, lambda_norm, log_mean, diagonal=False)


@register("orthogonalization")
def orthogonalization(h, mask=None, *, clamp: float = 0.1):
    """Push pairs that are closer than orthogonal towards orthogonal:
        L = mean over real i != j of max(0, 1/2 - D_ij)^2,
    D_ij angular with the same straight-through clip as `dispersion`."""
    _check(clamp=clamp)
    t = _tokens(h, mask)
    gap = torch.relu(0.5 - _angular(_cosine(t.z), clamp))
    return _mean_over_sequences(_pair_mean(gap.pow(2), t.pairs), t.valid)


@register("infonce-cos")
def infonce_cos(h, mask=None, *, tau: float = 1.0):
    """The image-generation original ("Diffuse and Disperse", D = -cos), a log-mean over all
    real pairs INCLUDING the diagonal:  L = log( (1 / n^2) sum_{i, j} exp(cos_ij / tau) )."""
    _check(tau=tau)
    t = _tokens(h, mask)
    with_diag = t.real[:, :, None] & t.real[:, None, :]
    per_seq = _pair_logsumexp(_cosine(t.z) / tau, with_diag, t.valid)
    return _mean_over_sequences(per_seq - 2 * _log_count(t.n, per_seq.dtype), t.valid)


# ---------------------------------------------------------------- token and layer selection

def _sample_positions(real: torch.Tensor, max_tokens: int, generator: torch.Generator | None):
    """[B, k] sorted positions, k = min(S, max_tokens): a uniform random subset of each row's
    real tokens (all of them when it has <= max_tokens), padded with padding positions. None
    when S <= max_tokens (nothing to drop; the generator is then not advanced)."""
    if max_tokens < 2:
        raise ConfigError(f"max_tokens must be >= 2 (a pair needs two tokens), got {max_tokens}")
    if real.shape[1] <= max_tokens:
        return None
    device = generator.device if generator is not None else real.device
    scores = torch.rand(real.shape, generator=generator, device=device).to(real.device)
    scores = scores.masked_fill(~real, -1.0)  # rand is in [0, 1): every real token beats padding
    return scores.topk(max_tokens, dim=1).indices.sort(dim=1).values


def _gather(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))


def subsample(h, mask=None, max_tokens: int = 256, generator: torch.Generator | None = None):
    """At most `max_tokens` random real positions per sequence -> (h_sub [B, k, d], mask_sub
    [B, k] bool), k = min(S, max_tokens), positions kept in their original order. A sequence
    with <= max_tokens real tokens keeps them all (the rest of its k slots are padding).
    Reproducible with a seeded `torch.Generator` (on any device; its draws are moved to h's)."""
    real = _real_mask(mask, h)
    idx = _sample_positions(real, max_tokens, generator)
    if idx is None:
        return h, real
    return _gather(h, idx), real.gather(1, idx)


def select_layers(num_blocks: int, location: str) -> list[int]:
    """Indices into HF's `hidden_states` (0 = embedding output, never selected; 1..L = blocks):
    all = 1..L, early_half = 1..L//2, late_half = L//2+1..L, last = [L]."""
    if location not in LOCATIONS:
        raise ConfigError(f"unknown location {location!r}; valid: {', '.join(LOCATIONS)}")
    L = num_blocks
    spans = {"all": (1, L), "early_half": (1, L // 2), "late_half": (L // 2 + 1, L), "last": (L, L)}
    first, last = spans[location]
    if last < first:
        raise ConfigError(f"location {location!r} selects no block of a {L}-block model")
    return list(range(first, last + 1))


def regularizer(
    hidden_states: Sequence[torch.Tensor],
    mask: torch.Tensor | None,
    name: str,
    location: str = "all",
    max_tokens: int = 256,
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """The regulariser `name` over the blocks `location` selects, as one scalar: the mean over
    selected layers and over counting sequences. Positions are drawn once per sequence and
    gathered from every selected layer; the layers are stacked into one [N*B, k, d] batch
    (layer-major, mask repeated) and the loss runs once. `options` go to the loss (tau, ...)."""
    loss = get_loss(name)
    layers = select_layers(len(hidden_states) - 1, location)
    real = _real_mask(mask, hidden_states[layers[0]])
    idx = _sample_positions(real, max_tokens, generator)
    if idx is not None:
        real = real.gather(1, idx)
    picked = [hidden_states[i] if idx is None else _gather(hidden_states[i], idx) for i in layers]
    # Every layer has the same mask, hence the same number of counting sequences: the mean
    # over the stacked batch equals the mean over layers of the per-layer means.
    return loss(torch.cat(picked, dim=0), real.repeat(len(layers), 1), **options)
