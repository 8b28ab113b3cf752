"""Table 5's loss as the authors' TorchTitan copy computes it (docs/fidelity.md P6): value and
gradient against a float64 reference written pair by pair from that formula."""

import math

import pytest
import torch

from lmdisp.train.losses import get_loss, regularizer


def _reference(z, tau=1.0, band=1e-2, eps=1e-4):
    """Per sequence: z / (||z|| + eps); cos clamped (plainly) to [-1 + band, 1 - band];
    log sum_{i != j} exp(-arccos(cos) / pi / tau + eps) - log(n (n - 1)); mean over sequences."""
    per_seq = []
    for b in range(z.shape[0]):
        zs = [z[b, i] / (torch.sqrt((z[b, i] ** 2).sum()) + eps) for i in range(z.shape[1])]
        n = len(zs)
        terms = [-torch.arccos(torch.clamp((zs[i] * zs[j]).sum(), -1 + band, 1 - band)) / math.pi / tau + eps
                 for i in range(n) for j in range(n) if i != j]
        top = max(t.item() for t in terms)
        per_seq.append(top + torch.log(sum(torch.exp(t - top) for t in terms)) - math.log(n * (n - 1)))
    return sum(per_seq) / len(per_seq)


def _hidden(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    z[0, 1] = z[0, 0] * 3 + 1e-3 * torch.randn(5, generator=g, dtype=torch.float64)  # cos ~ 1: clamped
    z[1, 2] = -z[1, 4]                                                                 # cos = -1: clamped
    return z


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_value_and_gradient_equal_the_float64_reference(tau):
    z1, z2 = _hidden().requires_grad_(True), _hidden().requires_grad_(True)
    ours = get_loss("dispersion-torchtitan")(z1, tau=tau)
    ref = _reference(z2, tau=tau)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    ours.backward(), ref.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_the_plain_clamp_differs_from_dispersions_straight_through_clip():
    """Outside the band their clamp passes no gradient; `dispersion` passes the edge's."""
    z = _hidden().requires_grad_(True)
    get_loss("dispersion-torchtitan")(z[:1, :2]).backward()
    assert torch.count_nonzero(z.grad) == 0                     # the one pair is clamped: nothing flows
    z.grad = None
    get_loss("dispersion")(z[:1, :2], clamp=0.01).backward()
    assert torch.count_nonzero(z.grad) > 0


def test_every_position_and_layers_averaged_like_their_wrapper():
    """max_tokens >= S keeps every position; the value is the mean of the per-layer losses."""
    layers = [torch.randn(2, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    got = regularizer(layers, None, "dispersion_torchtitan", location="all", max_tokens=4096, tau=1.0)
    want = sum(_reference(h) for h in layers[1:]) / 3
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
