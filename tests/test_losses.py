"""Tests for lmdisp.losses: every loss against an independent float64 loop over pairs, gradients
(gradcheck, straight-through clamp), degenerate inputs, masking, subsampling and layers."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from lmdisp.errors import ConfigError
from lmdisp.train.losses import (
    LOCATIONS,
    LOSSES,
    get_loss,
    regularizer,
    select_layers,
    subsample,
)

NAMES = ["dispersion", "decorrelation", "l2-repel", "l2-repel-paper", "orthogonalization", "infonce-cos"]


# ---------------------------------------------------------------- independent references

def _cos(a, b, eps=1e-3):
    return float(np.dot(a, b) / (max(np.linalg.norm(a), eps) * max(np.linalg.norm(b), eps)))


def _angular(a, b, clamp):
    return math.acos(min(max(_cos(a, b), -1 + clamp), 1 - clamp)) / math.pi


def ref_dispersion(z, tau=1.0, clamp=0.1, log_mean=False):
    n = len(z)
    terms = [-_angular(z[i], z[j], clamp) / tau for i in range(n) for j in range(n) if i != j]
    return logsumexp(terms) - (math.log(n * (n - 1)) if log_mean else 0.0)


def ref_decorrelation(z):
    d = z.shape[1]
    zc = [(v - v.mean()) / math.sqrt(np.var(v, ddof=1) + 1e-5) for v in z]
    n = len(z)
    sq = [(np.dot(zc[i], zc[j]) / (d - 1)) ** 2 for i in range(n) for j in range(n) if i != j]
    return float(np.mean(sq))


def ref_l2_repel(z, tau=1.0, lambda_norm=0.1, log_mean=False):
    """The authors' code: every pair, the diagonal i = j included."""
    n = len(z)
    terms = [-np.sum((z[i] - z[j]) ** 2) / tau for i in range(n) for j in range(n)]
    return logsumexp(terms) - (math.log(n * n) if log_mean else 0.0) + lambda_norm * float(np.mean(z**2))


def ref_l2_repel_paper(z, tau=1.0, lambda_norm=0.1, log_mean=False):
    """The paper's formula: i != j."""
    n = len(z)
    terms = [-np.sum((z[i] - z[j]) ** 2) / tau for i in range(n) for j in range(n) if i != j]
    return logsumexp(terms) - (math.log(n * (n - 1)) if log_mean else 0.0) + lambda_norm * float(np.mean(z**2))


def ref_orthogonalization(z, clamp=0.1):
    n = len(z)
    vals = [max(0.0, 0.5 - _angular(z[i], z[j], clamp)) ** 2 for i in range(n) for j in range(n) if i != j]
    return float(np.mean(vals))


def ref_infonce_cos(z, tau=1.0):
    n = len(z)
    return logsumexp([_cos(z[i], z[j]) / tau for i in range(n) for j in range(n)]) - math.log(n * n)


REFS = {
    "dispersion": ref_dispersion,
    "decorrelation": ref_decorrelation,
    "l2-repel": ref_l2_repel,
    "l2-repel-paper": ref_l2_repel_paper,
    "orthogonalization": ref_orthogonalization,
    "infonce-cos": ref_infonce_cos,
}


def ref_batch(name, h, mask, **opts):
    """Mean over sequences with >= 2 real tokens of the per-sequence reference."""
    vals = []
    for b in range(h.shape[0]):
        z = h[b][mask[b].astype(bool)]
        if len(z) >= 2:
            vals.append(REFS[name](z.astype(np.float64), **opts))
    return float(np.mean(vals))


def batch(seed=0, B=4, S=7, d=5, scale=1.0):
    """Random hidden states with padding; sequence 3 has a single real token (skipped)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, S, d, generator=g) * scale
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, :3] = 0  # left padding
    if B > 3:
        mask[3, 1:] = 0
    return h, mask


OPTS = {
    "dispersion": [{}, {"tau": 0.5, "clamp": 0.2}, {"log_mean": True}],
    "decorrelation": [{}],
    "l2-repel": [{}, {"tau": 2.0, "lambda_norm": 0.5}, {"log_mean": True}],
    "l2-repel-paper": [{}, {"tau": 2.0, "lambda_norm": 0.5}, {"log_mean": True}],
    "orthogonalization": [{}, {"clamp": 0.05}],
    "infonce-cos": [{}, {"tau": 0.3}],
}


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("name", NAMES)
def test_value_matches_loop_reference(name):
    # d = 3 makes some cosines fall outside the clamp band, so the clip is exercised too.
    for d in (3, 16):
        h, mask = batch(seed=d, d=d)
        for opts in OPTS[name]:
            got = get_loss(name)(h, mask, **opts)
            assert got.dtype == torch.float32 and got.dim() == 0
            want = ref_batch(name, h.double().numpy(), mask.numpy(), **opts)
            assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-5), (d, opts)


def test_registry_holds_the_seven_losses():
    # dispersion_torchtitan (Table 5's variant) is checked in tests/test_loss_torchtitan.py
    assert sorted(LOSSES) == sorted([*NAMES, "dispersion-torchtitan"])
    for name in NAMES:
        assert get_loss(name) is LOSSES[name]


def test_mask_none_means_all_real():
    h, _ = batch()
    for name in NAMES:
        loss = get_loss(name)
        assert torch.equal(loss(h, None), loss(h, torch.ones(h.shape[:2])))


def test_sequences_weigh_equally_and_short_ones_are_skipped():
    h, mask = batch()
    per = [get_loss("dispersion")(h[b : b + 1], mask[b : b + 1]) for b in range(3)]
    full = get_loss("dispersion")(h, mask)
    assert full.item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_no_counting_sequence_gives_connected_zero(name):
    h = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    out = get_loss(name)(h, mask)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))


# ---------------------------------------------------------------- gradients

def _in_band_inputs(seed=0, B=2, S=4, d=6, band=0.8):
    """float64 inputs whose off-diagonal cosines stay well inside [-0.9, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    while True:
        h = torch.randn(B, S, d, generator=g, dtype=torch.float64)
        zhat = h / h.norm(dim=-1, keepdim=True)
        c = zhat @ zhat.transpose(1, 2)
        if c[:, ~torch.eye(S, dtype=torch.bool)].abs().max() < band:
            return h


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    h = _in_band_inputs().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    loss = get_loss(name)
    for opts in OPTS[name]:
        assert torch.autograd.gradcheck(lambda x: loss(x, mask, **opts), (h,))


def _dloss_dcos(name, cos, **opts):
    """dL/dc for two unit vectors at cosine c, through c = cos(theta): dL/dc = -(dL/dtheta)/sin."""
    theta = torch.tensor(math.acos(cos), dtype=torch.float64, requires_grad=True)
    z = torch.stack([torch.stack([torch.ones_like(theta), torch.zeros_like(theta)]),
                     torch.stack([torch.cos(theta), torch.sin(theta)])])[None]
    get_loss(name)(z, None, **opts).backward()
    return -theta.grad.item() / math.sin(theta.item())


@pytest.mark.parametrize("name", ["dispersion", "orthogonalization"])
def test_straight_through_gradient_outside_band(name):
    edge = _dloss_dcos(name, 0.9)
    assert edge != 0.0
    for cos in (0.93, 0.99, 0.999):
        assert _dloss_dcos(name, cos) == pytest.approx(edge, rel=1e-9)
    # The value outside the band is the value at the edge.
    z = torch.tensor([[[1.0, 0.0], [0.99, math.sqrt(1 - 0.99**2)]]], dtype=torch.float64)
    z_edge = torch.tensor([[[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)]]], dtype=torch.float64)
    assert get_loss(name)(z).item() == pytest.approx(get_loss(name)(z_edge).item(), rel=1e-12)


def test_straight_through_gradient_on_antipodal_side():
    edge = _dloss_dcos("dispersion", -0.9, clamp=0.1)
    assert edge != 0.0
    assert _dloss_dcos("dispersion", -0.97, clamp=0.1) == pytest.approx(edge, rel=1e-9)
    # Analytically: L = log 2 - D / tau, dD/dc = -1 / (pi sqrt(1 - c^2)) at the edge.
    assert edge == pytest.approx(1 / (math.pi * math.sqrt(1 - 0.81)), rel=1e-9)


def _degenerate():
    base = torch.randn(1, 1, 8)
    return {
        "identical": base.expand(2, 5, 8).clone(),
        "antipodal": torch.cat([base, -base, base, -base], dim=1).expand(2, 4, 8).clone(),
        "zeros": torch.zeros(2, 5, 8),
        "constant_features": torch.ones(2, 5, 8),
        "bfloat16": torch.randn(2, 5, 8).to(torch.bfloat16),
        "bf16_identical": base.expand(2, 5, 8).to(torch.bfloat16),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(_degenerate()))
def test_finite_value_and_grad_on_degenerate_inputs(name, case):
    torch.manual_seed(1)
    h = _degenerate()[case].requires_grad_(True)
    out = get_loss(name)(h, None)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert h.grad.dtype == h.dtype and torch.isfinite(h.grad.float()).all()


@pytest.mark.parametrize("name", ["dispersion", "orthogonalization", "l2-repel", "l2-repel-paper"])
def test_identical_tokens_still_get_pushed_apart(name):
    # Identical tokens in general position must receive a gradient (the point of the
    # straight-through clamp); a tiny perturbation breaks the exact symmetry.
    h = (torch.randn(1, 1, 8).expand(1, 4, 8) + 1e-4 * torch.randn(1, 4, 8)).requires_grad_(True)
    get_loss(name)(h, None).backward()
    assert h.grad.abs().sum() > 0


def test_l2_repel_authors_version_is_the_norm_penalty_at_real_scales():
    """docs/fidelity.md L6: with ||z_i - z_j||^2 >> tau the diagonal's exp(0) = 1 terms swamp the
    off-diagonal ones, so the authors' loss and its gradient equal log(n) + 0.1 mean(z^2)'s;
    the paper's version keeps a repulsion gradient far larger than the norm term's."""
    h = (torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30)
    h.requires_grad_(True)
    norm = lambda x: 0.1 * x.pow(2).mean(dim=(1, 2)).mean()  # noqa: E731
    authors = get_loss("l2_repel")(h)
    assert authors.item() == pytest.approx(math.log(16) + norm(h).item(), rel=1e-12)
    (g_authors,) = torch.autograd.grad(authors, h)
    (g_norm,) = torch.autograd.grad(norm(h), h)
    torch.testing.assert_close(g_authors, g_norm, rtol=1e-9, atol=1e-12)
    (g_paper,) = torch.autograd.grad(get_loss("l2_repel_paper")(h), h)
    assert (g_paper - g_norm).norm() > 100 * g_norm.norm()


def test_autocast_does_not_lower_precision():
    h, mask = batch(d=16)
    want = get_loss("dispersion")(h, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = get_loss("dispersion")(h, mask)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-6)


# ---------------------------------------------------------------- masking

@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_nothing(name):
    h, mask = batch(d=6)
    other = h.clone()
    pad = mask == 0
    other[pad] = torch.randn(int(pad.sum()), 6) * 1e3
    nan = h.clone()
    nan[pad] = float("nan")
    loss = get_loss(name)
    results = []
    for x in (h, other, nan):
        x = x.clone().requires_grad_(True)
        out = loss(x, mask)
        out.backward()
        results.append((out.detach(), x.grad))
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0])
        assert torch.equal(grad[~pad], results[0][1][~pad])
        assert torch.equal(grad[pad], torch.zeros_like(grad[pad]))


# ---------------------------------------------------------------- subsample and layers

def _positional(B=3, S=40, d=4):
    """h[b, s] = (s, b, is_real, 0) so selected rows can be traced back."""
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, 30:] = 0
    mask[1, :35] = 0  # 5 real tokens: all must be kept
    h = torch.zeros(B, S, d)
    h[..., 0] = torch.arange(S, dtype=torch.float32)
    h[..., 1] = torch.arange(B, dtype=torch.float32)[:, None]
    h[..., 2] = mask.float()
    return h, mask


def test_subsample_reproducible_and_valid():
    h, mask = _positional()
    a = subsample(h, mask, 8, torch.Generator().manual_seed(3))
    b = subsample(h, mask, 8, torch.Generator().manual_seed(3))
    c = subsample(h, mask, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    h_sub, m_sub = a
    assert h_sub.shape == (3, 8, 4) and m_sub.shape == (3, 8)
    assert m_sub.sum(1).tolist() == [8, 5, 8]
    # Real slots come from real tokens of the same sequence, with no repeats.
    assert torch.equal(h_sub[..., 2][m_sub], torch.ones(int(m_sub.sum())))
    assert torch.equal(h_sub[..., 1], torch.arange(3.0)[:, None].expand(3, 8))
    for b in range(3):
        pos = h_sub[b, m_sub[b], 0]
        assert len(set(pos.tolist())) == len(pos)
    assert sorted(h_sub[1, m_sub[1], 0].tolist()) == [35.0, 36.0, 37.0, 38.0, 39.0]


def test_subsample_keeps_everything_when_short():
    h, mask = _positional(S=10)
    h_sub, m_sub = subsample(h, mask, 256)
    assert torch.equal(h_sub, h) and torch.equal(m_sub, mask.bool())


def test_subsample_covers_all_real_positions_over_draws():
    h, mask = _positional()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        h_sub, m_sub = subsample(h, mask, 8, g)
        seen |= set(h_sub[0, m_sub[0], 0].tolist())
    assert seen == set(float(s) for s in range(30))


def test_select_layers():
    assert select_layers(12, "all") == list(range(1, 13))
    assert select_layers(12, "early_half") == [1, 2, 3, 4, 5, 6]
    assert select_layers(12, "late_half") == [7, 8, 9, 10, 11, 12]
    assert select_layers(12, "last") == [12]
    assert select_layers(7, "early_half") == [1, 2, 3]
    assert select_layers(7, "late_half") == [4, 5, 6, 7]
    assert select_layers(7, "all") == list(range(1, 8))
    assert set(LOCATIONS) == {"all", "early_half", "late_half", "last"}
    with pytest.raises(ConfigError, match="valid: all, early_half, late_half, last"):
        select_layers(12, "middle")
    with pytest.raises(ConfigError):
        select_layers(1, "early_half")


@pytest.mark.parametrize("location", LOCATIONS)
def test_regularizer_is_mean_of_per_layer_losses(location):
    L, B, S, d = 5, 3, 20, 6
    torch.manual_seed(0)
    hs = tuple(torch.randn(B, S, d) for _ in range(L + 1))
    _, mask = _positional(B=B, S=S)
    got = regularizer(hs, mask, "dispersion", location, max_tokens=6,
                      generator=torch.Generator().manual_seed(7), tau=0.5)
    per_layer = []
    for i in select_layers(L, location):
        h_sub, m_sub = subsample(hs[i], mask, 6, torch.Generator().manual_seed(7))
        per_layer.append(get_loss("dispersion")(h_sub, m_sub, tau=0.5))
    assert got.item() == pytest.approx(torch.stack(per_layer).mean().item(), rel=1e-6)


def test_regularizer_calls_loss_once_and_skips_embeddings(monkeypatch):
    calls = []
    inner = LOSSES["decorrelation"]

    def counting(h, mask=None, **opts):
        calls.append(h.shape)
        return inner(h, mask, **opts)

    monkeypatch.setitem(LOSSES, "decorrelation", counting)
    hs = [torch.randn(2, 300, 4, requires_grad=True) for _ in range(5)]
    regularizer(hs, None, "decorrelation", "late_half").backward()
    assert calls == [(2 * 2, 256, 4)]
    assert hs[0].grad is None and hs[1].grad is None and hs[2].grad is None
    assert hs[3].grad.abs().sum() > 0 and hs[4].grad.abs().sum() > 0


def test_unknown_names_and_options_raise_config_error():
    with pytest.raises(ConfigError, match="valid: decorrelation, dispersion, dispersion-torchtitan, infonce-cos"):
        get_loss("disperse")
    h, mask = batch()
    with pytest.raises(ConfigError, match="valid: clamp, log_mean, tau"):
        get_loss("dispersion")(h, mask, temperature=1.0)
    with pytest.raises(ConfigError, match="valid: none"):
        regularizer([h, h], mask, "decorrelation", tau=1.0)
    with pytest.raises(ConfigError):
        regularizer([h, h], mask, "nope")
    with pytest.raises(ConfigError):
        get_loss("dispersion")(h, mask, tau=0.0)
    with pytest.raises(ConfigError):
        get_loss("dispersion")(h, mask, clamp=0.0)
    with pytest.raises(ConfigError):
        subsample(h, mask, max_tokens=1)
