"""Batched patch distances against scipy / scikit-image, degenerate cases, batch independence."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.spatial import distance as sd
from scipy.stats import wasserstein_distance
from skimage.metrics import structural_similarity

from vqganodip_pipeline.metrics import distances as D

SHAPES = [(4, 4, 3), (7, 7, 3), (8, 8), (8, 8, 3), (12, 12, 3), (16, 16), (16, 16, 3), (5, 9, 3)]
RTOL = 1e-9

REFERENCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "bray_curtis": sd.braycurtis,
    "canberra": sd.canberra,
    "euclidean": sd.euclidean,
    "cosine": sd.cosine,
    "minkowski": lambda u, v: sd.minkowski(u, v, 3),
    "jensen_shannon": sd.jensenshannon,
    "correlation": sd.correlation,
    "chebyshev": sd.chebyshev,
    "wasserstein": wasserstein_distance,
    "mse": lambda u, v: float(np.mean((u - v) ** 2)),
    "mae": lambda u, v: float(np.mean(np.abs(u - v))),
}


def _pairs(shape: tuple[int, ...], n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Original patches in [0, 1] and noisy 'reconstructions' of them, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, *shape))
    b = np.clip(a + rng.normal(0.0, 0.1, a.shape), 0.0, 1.0)
    return a, b


def _reference(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([REFERENCES[name](x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)])


def _skimage_ssim(a: np.ndarray, b: np.ndarray, **kwargs: object) -> np.ndarray:
    channel_axis = -1 if a.ndim == 4 else None
    return np.array(
        [
            structural_similarity(x, y, data_range=1.0, channel_axis=channel_axis, **kwargs)
            for x, y in zip(a, b, strict=True)
        ]
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_scipy_reference(name: str, shape: tuple[int, ...]) -> None:
    a, b = _pairs(shape)
    got = D.PATCH_DISTANCES[name](a, b)
    assert got.shape == (len(a),) and got.dtype == np.float64
    np.testing.assert_allclose(got, _reference(name, a, b), rtol=RTOL, atol=0)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, 4.0, np.inf])
def test_minkowski_orders(p: float) -> None:
    a, b = _pairs((8, 8, 3))
    ref = np.array([sd.minkowski(x.ravel(), y.ravel(), p) for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(D.minkowski(a, b, p=p), ref, rtol=RTOL)


def test_jensen_shannon_base_2() -> None:
    a, b = _pairs((12, 12, 3))
    ref = np.array(
        [sd.jensenshannon(x.ravel(), y.ravel(), base=2) for x, y in zip(a, b, strict=True)]
    )
    np.testing.assert_allclose(D.jensen_shannon(a, b, base=2), ref, rtol=RTOL)


def test_reference_agreement_with_exact_zeros_in_patches() -> None:
    # Dark pixels are common: canberra's 0/0 terms and JS's 0 log 0 terms must match scipy.
    a, b = _pairs((8, 8, 3), seed=3)
    a[:, :3] = 0.0
    b[:, :2] = 0.0
    for name in ("canberra", "bray_curtis", "jensen_shannon", "cosine", "correlation"):
        np.testing.assert_allclose(
            D.PATCH_DISTANCES[name](a, b), _reference(name, a, b), rtol=RTOL, err_msg=name
        )


def test_hamming_equals_scipy_on_uint8_values() -> None:
    rng = np.random.default_rng(1)
    a8 = rng.integers(0, 256, size=(20, 8, 8, 3)).astype(np.uint8)
    delta = rng.choice([-3, -1, 0, 0, 0, 1, 2], size=a8.shape)
    b8 = np.clip(a8.astype(int) + delta, 0, 255).astype(np.uint8)
    ref = np.array([sd.hamming(x.ravel(), y.ravel()) for x, y in zip(a8, b8, strict=True)])
    assert 0.2 < ref.mean() < 0.8  # the test data really has differing positions
    got = D.hamming(a8 / 255.0, b8 / 255.0)
    np.testing.assert_array_equal(got, ref)
    # One grey level apart differs; well below half a grey level does not.
    one = np.full((1, 4, 4), 10 / 255)
    np.testing.assert_array_equal(D.hamming(one, one + 1 / 255), [1.0])
    np.testing.assert_array_equal(D.hamming(one, one + 0.4 / 255), [0.0])


def test_hamming_atol_zero_is_exact_inequality() -> None:
    a, b = _pairs((8, 8), seed=2)
    b[:, :4] = a[:, :4]
    ref = np.array([sd.hamming(x.ravel(), y.ravel()) for x, y in zip(a, b, strict=True)])
    np.testing.assert_array_equal(D.hamming(a, b, atol=0.0), ref)
    np.testing.assert_array_equal(D.hamming(a, b, atol=1.0), 0.0)


@pytest.mark.parametrize("shape", [(3, 3), (4, 4, 3), *SHAPES, (20, 20, 3), (64, 64, 3)])
def test_ssim_matches_skimage(shape: tuple[int, ...]) -> None:
    a, b = _pairs(shape, n=6)
    w = D.default_ssim_win_size(shape[0], shape[1])
    assert w == min(7, shape[0], shape[1]) - (1 - min(7, shape[0], shape[1]) % 2)
    got = D.ssim(a, b)
    np.testing.assert_allclose(got, _skimage_ssim(a, b, win_size=w), rtol=RTOL)
    np.testing.assert_allclose(D.PATCH_DISTANCES["ssim"](a, b), got, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(4, 4, 3), (8, 8), (12, 12, 3), (16, 16, 3)])
def test_ssim_gaussian_weights_matches_skimage(shape: tuple[int, ...]) -> None:
    a, b = _pairs(shape, n=4)
    w = D.default_ssim_win_size(shape[0], shape[1], gaussian_weights=True)
    got = D.ssim(a, b, gaussian_weights=True)
    ref = _skimage_ssim(a, b, win_size=w, gaussian_weights=True)
    np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_ssim_explicit_window_and_constants() -> None:
    a, b = _pairs((12, 12, 3), n=4)
    got = D.ssim(a, b, win_size=3, data_range=2.0, k1=0.02, k2=0.05)
    ref = [
        structural_similarity(x, y, data_range=2.0, channel_axis=-1, win_size=3, K1=0.02, K2=0.05)
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=RTOL)


def _hand_global_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Single-window SSIM of one patch, channel by channel, written out plainly."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(x.shape[-1]):
        u = x[..., ch].ravel()
        v = y[..., ch].ravel()
        n = u.size
        vx = np.var(u, ddof=1) if n > 1 else 0.0
        vy = np.var(v, ddof=1) if n > 1 else 0.0
        vxy = np.cov(u, v, ddof=1)[0, 1] if n > 1 else 0.0
        mx, my = u.mean(), v.mean()
        values.append((2 * mx * my + c1) * (2 * vxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2, 3), (2, 5, 3), (2, 2)])
def test_ssim_patches_smaller_than_3px_use_one_global_window(shape: tuple[int, ...]) -> None:
    a, b = _pairs(shape, n=5, seed=4)
    got = D.ssim(a, b)
    assert np.all(np.isfinite(got))
    a3 = a if a.ndim == 4 else a[..., None]
    b3 = b if b.ndim == 4 else b[..., None]
    ref = [_hand_global_ssim(x, y) for x, y in zip(a3, b3, strict=True)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    np.testing.assert_array_equal(D.ssim(a, a), 1.0)


# --- degenerate inputs ---------------------------------------------------------------------


def _const(value: float, shape: tuple[int, ...] = (2, 8, 8, 3)) -> np.ndarray:
    return np.full(shape, value)


@pytest.mark.parametrize("name", sorted(D.PATCH_DISTANCES))
@pytest.mark.parametrize(
    ("a_val", "b_val"), [(0.0, 0.0), (0.3, 0.3), (0.0, 0.6), (0.2, 0.7), (1.0, 1.0), (0.1, 0.0)]
)
def test_constant_and_zero_patches_are_finite(name: str, a_val: float, b_val: float) -> None:
    got = D.PATCH_DISTANCES[name](_const(a_val), _const(b_val))
    assert got.shape == (2,)
    assert np.all(np.isfinite(got)), (name, a_val, b_val, got)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 2), (4, 4, 3), (8, 8), (16, 16, 3)])
def test_identical_patches(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    a = rng.random((4, *shape))
    a[1] = 0.0  # all-zero patch
    a[2] = 0.1  # constant patch whose mean is not exactly representable
    for name, fn in D.PATCH_DISTANCES.items():
        expected = 1.0 if name == "ssim" else 0.0
        np.testing.assert_array_equal(fn(a, a.copy()), expected, err_msg=name)


def test_documented_degenerate_values() -> None:
    zero, c3, c6 = _const(0.0), _const(0.3), _const(0.6)
    rng = np.random.default_rng(6)
    tex = rng.random((2, 8, 8, 3))
    # cosine: both zero -> 0, exactly one zero -> 1, parallel non-zero -> 0.
    np.testing.assert_array_equal(D.cosine(zero, zero), 0.0)
    np.testing.assert_array_equal(D.cosine(zero, tex), 1.0)
    np.testing.assert_array_equal(D.cosine(tex, zero), 1.0)
    np.testing.assert_allclose(D.cosine(c3, c6), 0.0, atol=1e-15)
    # correlation: both constant -> 0 (also zero vs constant), exactly one constant -> 1.
    np.testing.assert_array_equal(D.correlation(c3, c6), 0.0)
    np.testing.assert_array_equal(D.correlation(zero, c3), 0.0)
    np.testing.assert_array_equal(D.correlation(c3, tex), 1.0)
    np.testing.assert_array_equal(D.correlation(tex, zero), 1.0)
    # bray-curtis: 0/0 -> 0; one zero patch vs anything positive -> 1 (as scipy).
    np.testing.assert_array_equal(D.bray_curtis(zero, zero), 0.0)
    np.testing.assert_allclose(
        D.bray_curtis(zero, c3), sd.braycurtis(zero[0].ravel(), c3[0].ravel())
    )
    # signed data with u = -v: numerator > 0 over a zero denominator -> 1.
    np.testing.assert_array_equal(D.bray_curtis(tex, -tex), 1.0)
    # canberra: 0/0 terms count 0, as scipy's nansum.
    np.testing.assert_array_equal(D.canberra(zero, zero), 0.0)
    np.testing.assert_allclose(D.canberra(zero, c3), 8 * 8 * 3)
    # jensen-shannon: all-zero is uniform: 0 vs zero or constant, scipy's value vs texture.
    np.testing.assert_array_equal(D.jensen_shannon(zero, zero), 0.0)
    np.testing.assert_allclose(D.jensen_shannon(zero, c6), 0.0, atol=1e-15)
    np.testing.assert_allclose(D.jensen_shannon(zero, tex), D.jensen_shannon(c3, tex), rtol=1e-12)
    np.testing.assert_allclose(
        D.jensen_shannon(c3, tex), _reference("jensen_shannon", c3, tex), rtol=RTOL
    )
    # ssim: identical constant patches -> exactly 1, different constants -> luminance term.
    np.testing.assert_array_equal(D.ssim(c3, c3), 1.0)
    np.testing.assert_array_equal(D.ssim(zero, zero), 1.0)
    c1 = 0.01**2
    lum = (2 * 0.3 * 0.6 + c1) / (0.3**2 + 0.6**2 + c1)
    np.testing.assert_allclose(D.ssim(c3, c6), lum, rtol=1e-12)
    np.testing.assert_allclose(D.ssim(c3, c6), _skimage_ssim(c3, c6, win_size=7), rtol=1e-12)
    # wasserstein of two constants is their difference.
    np.testing.assert_allclose(D.wasserstein(c3, c6), 0.3, rtol=1e-12)


# --- batch independence, grouping, validation -----------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8, 3), (48, 48, 3)])  # 48 px stacks run in chunks
@pytest.mark.parametrize("name", sorted(D.PATCH_DISTANCES))
def test_batch_independence(name: str, shape: tuple[int, ...]) -> None:
    fn = D.PATCH_DISTANCES[name]
    a, b = _pairs(shape, n=10, seed=7)
    full = fn(a, b)
    singles = np.concatenate([fn(a[i : i + 1], b[i : i + 1]) for i in range(len(a))])
    np.testing.assert_allclose(full, singles, rtol=1e-14, atol=1e-16)
    perm = np.random.default_rng(8).permutation(len(a))
    np.testing.assert_allclose(fn(a[perm], b[perm]), full[perm], rtol=1e-14, atol=1e-16)
    # Replacing the other patches (with degenerate ones) leaves patch 0 unchanged.
    a2, b2 = a.copy(), b.copy()
    a2[1:] = 0.0
    b2[1:] = 1.0
    np.testing.assert_allclose(fn(a2, b2)[0], full[0], rtol=1e-14, atol=1e-16)


def test_empty_batch_gives_empty_result() -> None:
    empty = np.zeros((0, 8, 8, 3))
    for name, fn in D.PATCH_DISTANCES.items():
        assert fn(empty, empty).shape == (0,), name


def test_flattened_input_equals_spatial_input() -> None:
    a, b = _pairs((8, 8, 3))
    for name in REFERENCES:
        fn = D.PATCH_DISTANCES[name]
        np.testing.assert_array_equal(fn(a.reshape(len(a), -1), b.reshape(len(b), -1)), fn(a, b))


def test_uint8_and_float32_inputs_are_computed_in_float64() -> None:
    a, b = _pairs((8, 8, 3))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ref = D.euclidean(a32.astype(np.float64), b32.astype(np.float64))
    np.testing.assert_array_equal(D.euclidean(a32, b32), ref)
    assert D.ssim(a32, b32).dtype == np.float64


def test_paired_patch_distances_groups_mixed_sizes() -> None:
    rng = np.random.default_rng(9)
    shapes = [(4, 4, 3), (8, 8, 3), (12, 12, 3), (16, 16, 3), (4, 4, 3), (8, 5, 3), (8, 8, 3)]
    originals = [rng.random(s) for s in shapes]
    recons = [np.clip(o + rng.normal(0, 0.1, o.shape), 0, 1) for o in originals]
    got = D.paired_patch_distances(originals, recons)
    assert set(got) == set(D.PATCH_DISTANCES)
    for name, fn in D.PATCH_DISTANCES.items():
        expected = [fn(o[None], r[None])[0] for o, r in zip(originals, recons, strict=True)]
        np.testing.assert_allclose(got[name], expected, rtol=1e-14, atol=1e-16, err_msg=name)
    only = D.paired_patch_distances(originals, recons, names=["ssim", "mae"])
    assert list(only) == ["ssim", "mae"]
    none = D.paired_patch_distances([], [])
    assert all(v.shape == (0,) for v in none.values())


def test_registry_names_and_directions() -> None:
    assert set(D.PATCH_DISTANCES) == {
        "bray_curtis", "canberra", "euclidean", "cosine", "hamming", "minkowski",
        "jensen_shannon", "correlation", "chebyshev", "wasserstein", "ssim", "mse", "mae",
    }  # fmt: skip
    assert D.PATCH_METRIC_DIRECTION["ssim"] == "higher_is_more_similar"
    assert sorted(D.SIMILARITY_METRICS) == ["ssim"]
    for name in D.PATCH_DISTANCES:
        if name != "ssim":
            assert D.PATCH_METRIC_DIRECTION[name] == "lower_is_more_similar", name
    # The direction is real: a worse reconstruction raises every distance and lowers SSIM.
    rng = np.random.default_rng(10)
    a = rng.random((1, 16, 16, 3))
    near = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)
    far = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    for name, fn in D.PATCH_DISTANCES.items():
        if D.PATCH_METRIC_DIRECTION[name] == "higher_is_more_similar":
            assert fn(a, near)[0] > fn(a, far)[0], name
        else:
            assert fn(a, near)[0] < fn(a, far)[0], name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: D.euclidean(np.zeros((2, 4)), np.zeros((2, 5))), "same shape"),
        (lambda: D.euclidean(np.zeros(4), np.zeros(4)), "at least 2 dimensions"),
        (lambda: D.cosine(np.full((1, 4), np.nan), np.zeros((1, 4))), "NaN or inf"),
        (lambda: D.mae(np.zeros((1, 0)), np.zeros((1, 0))), "empty"),
        (lambda: D.ssim(np.zeros((2, 16)), np.zeros((2, 16))), "no spatial layout"),
        (lambda: D.ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), win_size=4), "odd"),
        (lambda: D.ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), win_size=9), "win_size"),
        (lambda: D.ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), data_range=0), "data_range"),
        (lambda: D.jensen_shannon(-np.ones((1, 4)), np.ones((1, 4))), ">= 0"),
        (lambda: D.minkowski(np.ones((1, 4)), np.ones((1, 4)), p=0), "p must be > 0"),
        (lambda: D.hamming(np.ones((1, 4)), np.ones((1, 4)), atol=-1), "atol"),
        (
            lambda: D.paired_patch_distances([np.zeros((4, 4))], [np.zeros((4, 4))], ["foo"]),
            "unknown metric",
        ),
        (lambda: D.paired_patch_distances([np.zeros((4, 4))], [np.zeros((5, 5))]), "pair 0"),
    ],
)
def test_bad_input_raises_clear_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
