"""The statistics beyond the mean cosine, the bootstrap intervals, the position profiles and
linear CKA, each against a direct NumPy/SciPy computation written out from its definition."""

import numpy as np
import pytest
import torch
from scipy import stats

from lmdisp.measure.compare import CkaAccumulator, layer_pairs, linear_cka
from lmdisp.measure.condensation import CondensationAccumulator, distance_profile, first_token_stats
from lmdisp.measure.geometry import centred_cosine, isoscore, rogue_share
from lmdisp.measure.uncertainty import bootstrap_ci, bootstrap_counts, kendall_rows, spearman_rows


def batch(b=3, s=9, d=6, seed=0, offset=2.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, s, d, generator=g)
    h[..., 0] += offset  # a shared direction (rogue dimension 0)
    return h


def unit_rows(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-3)


def np_isoscore(x):
    """Rudman et al. 2022, steps 1-7: PCA variances (eigenvalues of the sample covariance)."""
    d = x.shape[1]
    var = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    var_hat = np.sqrt(d) * var / np.linalg.norm(var)
    defect = np.linalg.norm(var_hat - 1) / np.sqrt(2 * (d - np.sqrt(d)))
    return ((d - defect ** 2 * (d - np.sqrt(d))) ** 2 - d) / (d * (d - 1))


def test_centred_cosine_matches_numpy():
    h = batch()
    for b in range(3):
        z = h[b].numpy().astype(np.float64)
        u = unit_rows(z - z.mean(axis=0))
        assert centred_cosine(h)[b].item() == pytest.approx((u @ u.T).mean(), abs=1e-6)
    # the offset inflates the plain cosine, not the centred one
    zn = torch.nn.functional.normalize(h, dim=-1)
    assert (zn.mean(1).square().sum(-1) > 3 * centred_cosine(h)).all()


@pytest.mark.parametrize("s, d", [(40, 6), (5, 8)])  # more tokens than dims, and fewer (zero variances)
def test_isoscore_matches_numpy(s, d):
    h = batch(b=2, s=s, d=d, offset=0.0)
    h[1] *= torch.tensor([5.0] + [1.0] * (d - 1))  # anisotropic
    got = isoscore(h)
    for b in range(2):
        assert got[b].item() == pytest.approx(np_isoscore(h[b].numpy().astype(np.float64)), abs=1e-5)
    if s > d:  # with enough tokens, the stretched cloud is less isotropic
        assert got[1] < got[0]


def test_isoscore_extremes():
    iso = torch.tensor(np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0] * 4, dtype=torch.float32)
    assert isoscore(torch.cat([iso, -iso])[None]).item() == pytest.approx(1.0, abs=1e-5)
    line = torch.randn(20, 1) * torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert isoscore(line[None]).item() == pytest.approx(0.0, abs=1e-5)


def test_rogue_share_matches_numpy_decomposition():
    h = batch(offset=6.0)
    zn = torch.nn.functional.normalize(h, dim=-1)
    got = rogue_share(zn, k=2)
    for b in range(3):
        z = unit_rows(h[b].numpy().astype(np.float64))
        # dimension i's contribution to the mean cosine: mean over pairs (a, b) of z_ai z_bi
        cc = np.array([np.outer(z[:, i], z[:, i]).mean() for i in range(z.shape[1])])
        assert cc.sum() == pytest.approx((z @ z.T).mean(), abs=1e-9)
        assert got[b].item() == pytest.approx(np.sort(cc)[-2:].sum() / cc.sum(), abs=1e-5)
    assert (got > 0.9).all()  # the offset dimension carries it


def test_accumulator_extra_metrics_per_repetition():
    h = batch(b=4, s=7, d=5)
    acc = CondensationAccumulator(("centred", "isoscore", "rogue"), top_k=1)
    acc.update([h, h * 2])
    res = acc.result()
    for name, fn in (("centred", centred_cosine), ("isoscore", isoscore)):
        np.testing.assert_allclose(res.extra[name][:, 0], fn(h).numpy(), atol=1e-6)
        np.testing.assert_allclose(res.extra[name][:, 1], fn(2 * h).numpy(), atol=1e-5)  # scale invariant
    zn = unit_rows(h.reshape(-1, 5).numpy().astype(np.float64)).reshape(4, 7, 5)
    cc = (zn.mean(axis=1) ** 2).mean(axis=0)
    np.testing.assert_allclose(res.dim_contributions[0], cc, atol=1e-6)


def test_distance_profile_and_first_token_match_loops():
    mats = np.random.default_rng(1).uniform(-1, 1, size=(3, 6, 6)).astype(np.float32)
    prof = distance_profile(mats)
    for l in range(3):
        for delta in range(6):
            vals = [mats[l, i, j] for i in range(6) for j in range(6) if abs(i - j) == delta]
            assert prof[l, delta] == pytest.approx(np.mean(vals), abs=1e-6)
    first = first_token_stats(mats)
    np.testing.assert_allclose(first["first_token_cos"], [m[0, 1:].mean() for m in mats], atol=1e-6)
    np.testing.assert_allclose(first["mean_cos_without_first"], [m[1:, 1:].mean() for m in mats], atol=1e-6)


def test_rank_correlations_match_scipy_row_by_row():
    y = np.random.default_rng(2).normal(size=(50, 7))
    y[3, 2] = y[3, 5]  # a tie
    for row, rho, tau in zip(y, spearman_rows(y), kendall_rows(y)):
        assert rho == pytest.approx(stats.spearmanr(np.arange(7), row).statistic)
        assert tau == pytest.approx(stats.kendalltau(np.arange(7), row).statistic)


def test_bootstrap_ci_equals_explicit_resampling():
    rep = np.random.default_rng(3).normal(size=(12, 5)) + np.arange(5) * 0.3
    ci = bootstrap_ci(rep, samples=400, level=0.9, seed=7)
    counts = bootstrap_counts(12, 400, 7)
    # the same resamples, spelled out: repeat repetition r c_r times
    means = np.stack([np.repeat(rep, c, axis=0).mean(axis=0) for c in counts])
    np.testing.assert_allclose(ci["low"], np.percentile(means, 5, axis=0))
    np.testing.assert_allclose(ci["high"], np.percentile(means, 95, axis=0))
    rhos = [stats.spearmanr(np.arange(5), m).statistic for m in means]
    assert ci["spearman_rho"] == pytest.approx(tuple(np.percentile(rhos, [5, 95])))
    taus = [stats.kendalltau(np.arange(5), m).statistic for m in means]
    assert ci["kendall_tau"] == pytest.approx(tuple(np.percentile(taus, [5, 95])))
    assert np.all(ci["low"] <= rep.mean(0)) and np.all(rep.mean(0) <= ci["high"])
    # seeded: the same seed gives the same interval
    assert bootstrap_ci(rep, 400, 0.9, 7)["low"] == pytest.approx(ci["low"])
    assert np.isnan(bootstrap_ci(rep[:1], 400)["low"]).all()


def np_cka(x, y):
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_matches_numpy_and_invariances():
    x = batch(b=2, s=11, d=6).double()
    y = torch.randn(2, 11, 4, dtype=torch.float64)
    got = linear_cka(x, y)
    for b in range(2):
        assert got[b].item() == pytest.approx(np_cka(x[b].numpy(), y[b].numpy()), abs=1e-5)
    q = torch.tensor(np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0])
    np.testing.assert_allclose(linear_cka(x, 3 * x @ q).numpy(), 1.0, atol=1e-5)


def test_layer_pairs_by_depth():
    assert layer_pairs(5, 5) == [(i, i) for i in range(5)]
    assert layer_pairs(3, 5) == [(0, 0), (1, 2), (2, 4)]


def test_cka_accumulator_streams_per_repetition_with_depth_pairing():
    a = [torch.randn(5, 8, 6) for _ in range(5)]   # 5 layers, 5 repetitions
    b = [torch.randn(5, 8, 3) for _ in range(3)]   # 3 layers
    acc = CkaAccumulator()
    for s in (slice(0, 2), slice(2, 5)):          # two batches
        acc.update([x[s] for x in a], [y[s] for y in b])
    got = acc.result()
    assert got.shape == (5, 5) and acc.pairs == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2)]
    for r in range(5):
        for p, (i, j) in enumerate(acc.pairs):
            assert got[r, p] == pytest.approx(np_cka(a[i][r].numpy().astype(np.float64),
                                                     b[j][r].numpy().astype(np.float64)), abs=1e-5)
