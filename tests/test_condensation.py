"""Metric maths against direct NumPy/SciPy computations."""

import numpy as np
import pytest
import torch
from scipy import stats

from lmdisp.measure.condensation import (CondensationAccumulator, cosine_matrix, last_n_means, layer_histograms,
                                 trend)


def numpy_cosine(z):
    """The paper's definition, written out: rows / max(norm, 1e-3), Gram matrix, clip."""
    z = np.asarray(z, dtype=np.float64)
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-3)
    return np.clip(zn @ zn.T, -1, 1)


def random_hidden(reps=5, layers=4, seq=7, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(reps, layers, seq, dim, generator=g)
    h[:, 1] += 3.0  # a condensed layer: a shared offset
    h[0, 2, 3] = 1e-5  # a near-zero token exercises the 1e-3 norm floor
    return h


def test_cosine_matrix_matches_numpy():
    z = random_hidden()[0, 0]
    np.testing.assert_allclose(cosine_matrix(z).numpy(), numpy_cosine(z.numpy()), atol=1e-6)


def test_streaming_equals_stacked_numpy():
    h = random_hidden()
    acc = CondensationAccumulator()
    for r in range(h.shape[0]):
        acc.update([h[r, l][None] for l in range(h.shape[1])])
    res = acc.result()
    stacked = np.stack([[numpy_cosine(h[r, l].numpy()) for l in range(h.shape[1])] for r in range(h.shape[0])])
    np.testing.assert_allclose(res.mean_matrices, stacked.mean(axis=0), atol=1e-6)
    # per-repetition means (the spread) equal the mean of each repetition's matrix
    np.testing.assert_allclose(res.rep_means, stacked.mean(axis=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(res.layer_means, stacked.mean(axis=(0, 2, 3)), atol=1e-6)


@pytest.mark.parametrize("batch", [2, 3, 5])
def test_batched_equals_unbatched(batch):
    h = random_hidden(reps=5)
    one, many = CondensationAccumulator(("entropy", "variance")), CondensationAccumulator(("entropy", "variance"))
    for r in range(5):
        one.update([h[r, l][None] for l in range(4)])
    for s in range(0, 5, batch):
        many.update([h[s:s + batch, l] for l in range(4)])
    a, b = one.result(), many.result()
    np.testing.assert_allclose(a.mean_matrices, b.mean_matrices, atol=1e-6)
    np.testing.assert_allclose(a.rep_means, b.rep_means, atol=1e-6)
    for k in a.extra:
        np.testing.assert_allclose(a.extra[k], b.extra[k], atol=1e-5)


def test_geometry_metrics_match_numpy_svd():
    h = random_hidden(reps=2)
    acc = CondensationAccumulator(("entropy", "variance"))
    for r in range(2):
        acc.update([h[r, l][None] for l in range(4)])
    res = acc.result()
    for r in range(2):
        for l in range(4):
            z = h[r, l].numpy().astype(np.float64)
            zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-3)
            s = np.linalg.svd(zn, compute_uv=False)
            p = s / s.sum()
            assert res.extra["entropy"][r, l] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-4)
            assert res.extra["variance"][r, l] == pytest.approx(s[0] ** 2 / (s ** 2).sum(), abs=1e-5)


def test_cone_is_rank_one_and_fully_condensed():
    direction = torch.randn(8)
    h = direction.expand(1, 5, 8) * (torch.rand(1, 5, 1) * 3 + 0.1)  # positive multiples of one vector
    acc = CondensationAccumulator(("entropy", "variance"))
    acc.update([h])
    res = acc.result()
    assert res.layer_means[0] == pytest.approx(1.0, abs=1e-5)
    assert res.extra["variance"][0, 0] == pytest.approx(1.0, abs=1e-4)
    assert res.extra["entropy"][0, 0] < 0.01


def test_trend_matches_scipy_and_last_n():
    m = np.array([0.1, 0.3, 0.2, 0.5, 0.9, 0.8])
    t = trend(m)
    assert t["spearman_rho"] == pytest.approx(stats.spearmanr(np.arange(6), m).statistic)
    assert t["kendall_tau"] == pytest.approx(stats.kendalltau(np.arange(6), m).statistic)
    assert last_n_means(m) == pytest.approx([m[-n:].mean() for n in range(1, 7)])


def test_histograms_are_densities():
    mats = np.stack([numpy_cosine(z.numpy()) for z in random_hidden()[0]])
    hist = layer_histograms(mats, bins=128)
    assert hist.shape == (4, 128)
    np.testing.assert_allclose(hist.sum(axis=1) * (2 / 128), 1.0)


def test_mismatched_shapes_are_rejected():
    acc = CondensationAccumulator()
    acc.update([torch.randn(1, 4, 3)])
    with pytest.raises(ValueError):
        acc.update([torch.randn(1, 5, 3)])
