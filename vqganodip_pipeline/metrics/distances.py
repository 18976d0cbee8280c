"""Batched paired distances between original and reconstructed patches: ``a[i]`` vs ``b[i]``.

Every function takes two arrays of equal shape ``(B, ...)`` -- a stack of ``B`` patches, e.g.
``(B, s, s, 3)`` colour or ``(B, s, s)`` grayscale, or already flattened ``(B, P)`` -- and returns
a float64 array of shape ``(B,)`` whose entry ``i`` compares ``a[i]`` with ``b[i]`` only (the other
patches of the batch never influence it). Patch values are intensities in [0, 1]; computation is
float64 and vectorised over the batch (no Python loop over patches; stacks of large patches are
cut into cache-sized chunks of whole patches, which changes speed, not results). Patches of one
image come in a few sizes; :func:`paired_patch_distances` groups a list of patches by shape, so
each size is one vectorised call per metric.

Reference implementations (matched to ~1e-9 relative on generic inputs, tested):

=================  ===========================================================================
name               reference for one pair of flattened patches ``u = a[i].ravel()``, ``v``
=================  ===========================================================================
bray_curtis        ``scipy.spatial.distance.braycurtis(u, v)``
canberra           ``scipy.spatial.distance.canberra(u, v)``
euclidean          ``scipy.spatial.distance.euclidean(u, v)``
cosine             ``scipy.spatial.distance.cosine(u, v)``
hamming            ``scipy.spatial.distance.hamming(round(255 u), round(255 v))``, see below
minkowski          ``scipy.spatial.distance.minkowski(u, v, p)``, ``p = 3`` in the registry
jensen_shannon     ``scipy.spatial.distance.jensenshannon(u, v)`` (natural log, a distance: the
                   square root of the divergence; intensities normalised to sum 1)
correlation        ``scipy.spatial.distance.correlation(u, v)``
chebyshev          ``scipy.spatial.distance.chebyshev(u, v)``
wasserstein        ``scipy.stats.wasserstein_distance(u, v)`` (1-D, between the two patches'
                   value distributions; equal sizes, so the mean of ``|sort(u) - sort(v)|``)
ssim               ``skimage.metrics.structural_similarity(a[i], b[i], data_range=1.0,
                   channel_axis=-1 (colour only), win_size=w, gaussian_weights=False)`` with
                   ``w`` the largest odd number <= min(7, H, W). A SIMILARITY (see below).
mse / mae          mean of ``(u - v) ** 2`` / of ``|u - v|`` over all pixels and channels
=================  ===========================================================================

Direction: every entry is a distance (0 = identical, larger = more different) except ``ssim``,
which is a similarity (1 = identical, larger = more similar). It is NOT flipped here;
:data:`PATCH_METRIC_DIRECTION` states the direction of each registered name so that a
downstream user can decide.

Hamming on continuous data counts the positions whose values differ by more than ``atol``
(default half a grey level, ``0.5 / 255``). For patches that are ``uint8`` images divided by 255
(every value a multiple of 1/255) this equals scipy's ``hamming`` on the ``uint8`` values;
for arbitrary floats it is a tolerance test, not a quantisation (two values 0.002/255 apart on
either side of a rounding boundary are "equal" here). ``atol=0`` gives scipy's exact ``u != v``.

Degenerate inputs never give NaN or inf (inputs themselves must be finite, else ValueError):

=================  ===========================================================================
case               value
=================  ===========================================================================
bray_curtis        ``sum|u+v| == 0`` (both all-zero for non-negative data): 0 when also
                   ``sum|u-v| == 0``, otherwise 1 (only possible for signed data, u = -v).
                   scipy gives NaN for 0/0.
canberra           0/0 terms (``u_k = v_k = 0``) count 0, exactly like scipy.
cosine             both vectors all-zero -> 0; exactly one all-zero -> 1; identical vectors
                   -> exactly 0 (no rounding residue). Otherwise clipped to [0, 2] like scipy.
                   (Values so tiny, < ~1e-154, that a squared norm underflows count as zero.)
correlation        same rules on the centred vectors: both patches constant (``max == min``,
                   tested directly, not via a rounded mean) -> 0 ("no structure" in both);
                   exactly one constant -> 1; identical -> exactly 0; clipped to [0, 2].
jensen_shannon     no epsilon is added (so the value equals scipy's): 0*log(0) terms count 0
                   and the mixture is > 0 wherever either distribution is, so no log(0) occurs.
                   An all-zero patch (sum 0) is taken as the uniform distribution -- the limit
                   of a constant patch ``c -> 0``, whose normalised intensities are uniform for
                   every ``c > 0`` -- hence both all-zero -> 0, all-zero vs constant -> 0.
                   Negative intensities raise ValueError. Rounding below 0 is clipped to 0.
ssim               identical patches (constant ones included) -> exactly 1; the constants
                   C1 = (0.01 R)^2, C2 = (0.03 R)^2 keep every denominator > 0.
                   Patches with min(H, W) < 3 (no 3x3 window fits; skimage raises) -> one
                   window over the whole patch: global means and sample (co)variances over the
                   H*W pixels of each channel (population, i.e. 0, for a single pixel, where
                   only the luminance term remains), averaged over channels.
others             always finite (sums, maxima, sorts of finite differences).
=================  ===========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np
from scipy import ndimage
from scipy.special import rel_entr

HALF_GREY_LEVEL = 0.5 / 255.0
"""Default Hamming tolerance: values closer than half a ``uint8`` grey level count as equal."""

PatchDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Large stacks (64 px colour patches) are processed in chunks of about this many values per
# array, so that the handful of temporaries of a kernel stay in the L2 cache; results do not
# depend on it (every kernel works patch by patch).
_CHUNK_VALUES = 1 << 15


def _rowdot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (B, P) arrays."""
    # Plain einsum, not np.vecdot / BLAS: a (possibly multi-threaded) BLAS call per row
    # stalls badly when the cores are busy with other work (measured: 100x slower).
    return np.einsum("ij,ij->i", u, v)


def _pair(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch pair and return both as float64 arrays of the input shape."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 2:
        raise ValueError(
            f"{name}: expected a batch of shape (B, ...) with at least 2 dimensions, "
            f"got shape {a.shape}"
        )
    if a.shape[0] > 0 and math.prod(a.shape[1:]) == 0:
        raise ValueError(f"{name}: patches are empty (shape {a.shape})")
    for label, arr in (("a", a), ("b", b)):
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{name}: {label} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name}: {label} must be real, got dtype {arr.dtype}")
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    for label, arr in (("a", a), ("b", b)):
        # A finite sum proves every value finite without a full-size boolean temporary; only
        # when it is not (NaN / inf present, or an overflow of huge values) look closer.
        if not np.isfinite(arr.sum()) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: {label} contains NaN or inf")
    return a, b


def _flatten(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], math.prod(a.shape[1:]))


def _chunked(kernel: PatchDistance, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Apply a per-patch ``kernel`` to validated stacks, a cache-sized chunk of patches at once."""
    n = a.shape[0]
    rows = max(1, _CHUNK_VALUES // max(1, math.prod(a.shape[1:])))
    if n <= rows:
        return kernel(a, b)
    out = np.empty(n)
    for start in range(0, n, rows):
        out[start : start + rows] = kernel(a[start : start + rows], b[start : start + rows])
    return out


def _flat_metric(kernel: PatchDistance, a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    u, v = _pair(a, b, name)
    return _chunked(kernel, _flatten(u), _flatten(v))


# --- kernels: validated float64 (B, P) stacks in, (B,) out ---------------------------------------


def _bray_curtis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    num = np.abs(u - v).sum(axis=1)
    den = np.abs(u + v).sum(axis=1)
    out = np.where(num > 0, 1.0, 0.0)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _canberra(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    den = np.abs(u) + np.abs(v)
    terms = np.zeros_like(den)
    np.divide(np.abs(u - v), den, out=terms, where=den > 0)
    return terms.sum(axis=1)


def _euclidean(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = u - v
    return np.sqrt(_rowdot(d, d))


def _one_minus_correlation(
    u: np.ndarray, v: np.ndarray, zero_u: np.ndarray | None, zero_v: np.ndarray | None
) -> np.ndarray:
    """Shared body of cosine / correlation with the degenerate-case rules of the module.

    ``zero_u`` / ``zero_v`` flag rows known to be zero vectors; ``None`` derives them from the
    squared norms (exact: a sum of squares is 0 only for an all-zero row, or one of values so
    tiny that it underflows, which counts as zero too).
    """
    uv = _rowdot(u, v)
    uu = _rowdot(u, u)
    vv = _rowdot(v, v)
    zero_u = uu == 0 if zero_u is None else zero_u | (uu == 0)
    zero_v = vv == 0 if zero_v is None else zero_v | (vv == 0)
    norm = np.sqrt(uu * vv)
    # uu * vv can underflow to 0 for non-zero vectors of tiny values: distance 1, as one-zero.
    valid = norm > 0
    ratio = np.zeros_like(norm)
    np.divide(uv, norm, out=ratio, where=valid)
    out = np.clip(1.0 - ratio, 0.0, 2.0)
    out[~valid] = 1.0
    out[zero_u ^ zero_v] = 1.0
    out[zero_u & zero_v] = 0.0
    # Identical vectors leave a rounding residue of a few ulp; only near-zero rows can be equal,
    # so only those are compared element by element.
    near = np.flatnonzero(out < 1e-6)
    if near.size:
        out[near[np.all(u[near] == v[near], axis=1)]] = 0.0
    return out


def _cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _one_minus_correlation(u, v, None, None)


def _correlation(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    const_u = np.ptp(u, axis=1) == 0
    const_v = np.ptp(v, axis=1) == 0
    uc = u - u.mean(axis=1, keepdims=True)
    vc = v - v.mean(axis=1, keepdims=True)
    # A constant patch's mean is not always exactly representable: force its centred vector to 0.
    uc[const_u] = 0.0
    vc[const_v] = 0.0
    # Equal centred vectors (tested below) come from equal patches or patches differing by a
    # constant; the latter have correlation 1 too, so distance 0 is right for both.
    return _one_minus_correlation(uc, vc, const_u, const_v)


def _hamming(u: np.ndarray, v: np.ndarray, atol: float = HALF_GREY_LEVEL) -> np.ndarray:
    return np.mean(np.abs(u - v) > atol, axis=1)


def _minkowski(u: np.ndarray, v: np.ndarray, p: float = 3.0) -> np.ndarray:
    d = np.abs(u - v)
    if np.isinf(p):
        return d.max(axis=1)
    if p == 1:
        return d.sum(axis=1)
    if p == 2:
        return np.sqrt(_rowdot(d, d))
    return np.power(np.power(d, p, out=d).sum(axis=1), 1.0 / p)


def _chebyshev(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u - v).max(axis=1)


def _as_distribution(x: np.ndarray) -> np.ndarray:
    """Rows divided by their sums; an all-zero row becomes the uniform distribution."""
    s = x.sum(axis=1, keepdims=True)
    p = np.divide(x, s, out=np.zeros_like(x), where=s > 0)
    p[s[:, 0] == 0] = 1.0 / x.shape[1]
    return p


def _jensen_shannon(u: np.ndarray, v: np.ndarray, base: float | None = None) -> np.ndarray:
    p = _as_distribution(u)
    q = _as_distribution(v)
    m = (p + q) / 2.0
    js = rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)
    if base is not None:
        js /= np.log(base)
    return np.sqrt(np.maximum(js / 2.0, 0.0))


def _wasserstein(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(np.sort(u, axis=1) - np.sort(v, axis=1)).mean(axis=1)


def _mse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = u - v
    return _rowdot(d, d) / d.shape[1]


def _mae(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u - v).mean(axis=1)


# --- public functions ----------------------------------------------------------------------------


def bray_curtis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bray-Curtis distance ``sum|u - v| / sum|u + v|`` per pair; 0/0 -> 0 (module docstring)."""
    return _flat_metric(_bray_curtis, a, b, "bray_curtis")


def canberra(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canberra distance ``sum_k |u_k - v_k| / (|u_k| + |v_k|)``; 0/0 terms count 0 (as scipy)."""
    return _flat_metric(_canberra, a, b, "canberra")


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean (L2) distance per pair, in intensity units."""
    return _flat_metric(_euclidean, a, b, "euclidean")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance ``1 - u.v / (|u| |v|)`` in [0, 2]; zero-vector rules in the module doc."""
    return _flat_metric(_cosine, a, b, "cosine")


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation distance ``1 - pearson(u, v)`` in [0, 2]; constant-patch rules in module doc."""
    return _flat_metric(_correlation, a, b, "correlation")


def hamming(a: np.ndarray, b: np.ndarray, atol: float = HALF_GREY_LEVEL) -> np.ndarray:
    """Fraction of positions with ``|u_k - v_k| > atol`` (in [0, 1]).

    With the default ``atol`` (half a grey level) this is scipy's ``hamming`` on the ``uint8``
    values for patches that are ``uint8 / 255``; ``atol=0`` is scipy's exact ``u != v``.
    """
    if not (np.isfinite(atol) and atol >= 0):
        raise ValueError(f"hamming: atol must be a finite number >= 0, got {atol!r}")
    return _flat_metric(partial(_hamming, atol=atol), a, b, "hamming")


def minkowski(a: np.ndarray, b: np.ndarray, p: float = 3.0) -> np.ndarray:
    """Minkowski distance ``(sum |u - v|^p)^(1/p)``; ``p > 0``, ``p = inf`` is Chebyshev."""
    if not p > 0:
        raise ValueError(f"minkowski: p must be > 0, got {p!r}")
    return _flat_metric(partial(_minkowski, p=p), a, b, "minkowski")


def chebyshev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chebyshev (L-infinity) distance ``max_k |u_k - v_k|``."""
    return _flat_metric(_chebyshev, a, b, "chebyshev")


def _check_non_negative(u: np.ndarray, v: np.ndarray, name: str) -> None:
    if (u.size and u.min() < 0) or (v.size and v.min() < 0):
        raise ValueError(f"{name}: intensities must be >= 0 to form distributions")


def jensen_shannon(a: np.ndarray, b: np.ndarray, base: float | None = None) -> np.ndarray:
    """Jensen-Shannon distance (square root of the divergence) of the normalised intensities.

    Each patch is divided by its sum to give a distribution over its pixels (and channels);
    an all-zero patch is the uniform distribution (module docstring). ``base`` is the logarithm
    base (``None``: natural log, range [0, sqrt(ln 2)]; ``2``: range [0, 1]).
    """
    if base is not None and not (np.isfinite(base) and base > 0 and base != 1):
        raise ValueError(f"jensen_shannon: base must be a positive number != 1, got {base!r}")
    u, v = _pair(a, b, "jensen_shannon")
    _check_non_negative(u, v, "jensen_shannon")
    return _chunked(partial(_jensen_shannon, base=base), _flatten(u), _flatten(v))


def wasserstein(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1-D Wasserstein (earth mover's) distance between the two patches' value distributions.

    Both patches have the same number of values with equal weights, so the optimal transport
    pairs the sorted values: ``mean(|sort(u) - sort(v)|)``, in intensity units.
    """
    return _flat_metric(_wasserstein, a, b, "wasserstein")


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error over all pixels and channels of each patch."""
    return _flat_metric(_mse, a, b, "mse")


def mae(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute error over all pixels and channels of each patch."""
    return _flat_metric(_mae, a, b, "mae")


# --- SSIM ----------------------------------------------------------------------------------------


def default_ssim_win_size(height: int, width: int, gaussian_weights: bool = False) -> int:
    """Largest odd window <= min(7, H, W) (11 with Gaussian weights, skimage's own default).

    Returns 1 when no 3x3 window fits (min side < 3): :func:`ssim` then uses one window over
    the whole patch.
    """
    cap = 11 if gaussian_weights else 7
    w = min(cap, height, width)
    return w if w % 2 == 1 else w - 1


def _global_ssim(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """SSIM with a single window covering each (B, H, W, C) patch, averaged over channels."""
    n = x.shape[1] * x.shape[2]
    cov_norm = n / (n - 1) if n > 1 else 0.0
    ux = x.mean(axis=(1, 2))
    uy = y.mean(axis=(1, 2))
    xc = x - ux[:, None, None, :]
    yc = y - uy[:, None, None, :]
    # With a single pixel the centred values are exactly 0, so cov_norm = 0 changes nothing.
    vx = cov_norm * (xc * xc).mean(axis=(1, 2))
    vy = cov_norm * (yc * yc).mean(axis=(1, 2))
    vxy = cov_norm * (xc * yc).mean(axis=(1, 2))
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=-1)


def _windowed_ssim(
    x: np.ndarray,
    y: np.ndarray,
    *,
    c1: float,
    c2: float,
    win_size: int,
    gaussian_weights: bool,
    sigma: float,
) -> np.ndarray:
    """skimage's SSIM for (B, H, W, C) stacks, ``3 <= win_size <= min(H, W)``."""
    height, width = x.shape[1], x.shape[2]
    # One filtering call for the five local moments: axis 0 = moment, 1 = patch; spatial only.
    moments = np.stack([x, y, x * x, y * y, x * y])
    if gaussian_weights:
        filtered = ndimage.gaussian_filter(
            moments, sigma=(0, 0, sigma, sigma, 0), truncate=3.5, mode="reflect"
        )
    else:
        filtered = ndimage.uniform_filter(moments, size=(1, 1, win_size, win_size, 1))
    pad = (win_size - 1) // 2
    # skimage averages S over the cropped region only, so only that region is evaluated.
    ux, uy, uxx, uyy, uxy = filtered[:, :, pad : height - pad, pad : width - pad, :]
    npix = win_size**2
    cov_norm = npix / (npix - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2)).mean(axis=-1)


def _ssim(
    x: np.ndarray,
    y: np.ndarray,
    *,
    data_range: float = 1.0,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """SSIM kernel on validated float64 (B, H, W, C) stacks (arguments as :func:`ssim`)."""
    height, width = x.shape[1], x.shape[2]
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    if x.shape[0] == 0:
        return np.zeros(0)
    if win_size is None:
        win_size = default_ssim_win_size(height, width, gaussian_weights)
        if win_size < 3:
            return _chunked(partial(_global_ssim, c1=c1, c2=c2), x, y)
    elif win_size % 2 != 1 or not 3 <= win_size <= min(height, width):
        raise ValueError(
            f"ssim: win_size must be odd with 3 <= win_size <= min(H, W) = {min(height, width)}, "
            f"got {win_size}"
        )
    kernel = partial(
        _windowed_ssim,
        c1=c1,
        c2=c2,
        win_size=win_size,
        gaussian_weights=gaussian_weights,
        sigma=sigma,
    )
    return _chunked(kernel, x, y)


def _spatial_pair(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (B, H, W, C) stacks from (B, H, W) or (B, H, W, C) input."""
    x, y = _pair(a, b, name)
    if x.ndim == 3:
        return x[..., None], y[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"{name}: expected patches of shape (B, H, W) or (B, H, W, C), "
            f"got shape {x.shape} (flattened patches have no spatial layout)"
        )
    return x, y


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 1.0,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean structural similarity per pair (a SIMILARITY: 1 = identical, higher = more similar).

    Args:
        a, b: ``(B, H, W)`` grayscale or ``(B, H, W, C)`` colour patch stacks (channels last).
        data_range: dynamic range R of the values (1.0 for intensities in [0, 1]).
        win_size: odd window side; default :func:`default_ssim_win_size`. Must be
            ``3 <= win_size <= min(H, W)`` when given.
        gaussian_weights: Gaussian-weighted windows (``sigma``, truncated at 3.5 sigma) instead
            of uniform ones, as skimage's option of the same name.
        sigma, k1, k2: skimage's ``sigma``, ``K1``, ``K2``.

    Equals ``skimage.metrics.structural_similarity(a[i], b[i], data_range=R,
    win_size=w, channel_axis=-1 for colour)`` for every ``i``: local statistics by filtering
    the whole stack over the spatial axes only (reflect mode, as skimage), sample covariance,
    mean over the valid region (a border of ``(w - 1) // 2`` px cropped), then over channels.
    Patches with min(H, W) < 3: one window over the whole patch (module docstring).
    """
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"ssim: data_range must be a positive number, got {data_range!r}")
    if k1 < 0 or k2 < 0 or sigma <= 0:
        raise ValueError(f"ssim: need k1, k2 >= 0 and sigma > 0, got {k1}, {k2}, {sigma}")
    x, y = _spatial_pair(a, b, "ssim")
    return _ssim(
        x,
        y,
        data_range=data_range,
        win_size=win_size,
        gaussian_weights=gaussian_weights,
        sigma=sigma,
        k1=k1,
        k2=k2,
    )


PATCH_DISTANCES: dict[str, PatchDistance] = {
    "bray_curtis": bray_curtis,
    "canberra": canberra,
    "euclidean": euclidean,
    "cosine": cosine,
    "hamming": hamming,
    "minkowski": partial(minkowski, p=3.0),
    "jensen_shannon": jensen_shannon,
    "correlation": correlation,
    "chebyshev": chebyshev,
    "wasserstein": wasserstein,
    "ssim": ssim,
    "mse": mse,
    "mae": mae,
}
"""Patch metrics by stable snake_case name (used in metric-table column names).

All are distances except ``ssim`` (a similarity); see :data:`PATCH_METRIC_DIRECTION`.
``minkowski`` uses ``p = 3``; ``hamming`` the half-grey-level tolerance.
"""

# The same metrics as kernels on already validated stacks, for paired_patch_distances (which
# validates each size group once instead of once per metric). Flat kernels take (B, P).
_FLAT_KERNELS: dict[str, PatchDistance] = {
    "bray_curtis": _bray_curtis,
    "canberra": _canberra,
    "euclidean": _euclidean,
    "cosine": _cosine,
    "hamming": _hamming,
    "minkowski": partial(_minkowski, p=3.0),
    "jensen_shannon": _jensen_shannon,
    "correlation": _correlation,
    "chebyshev": _chebyshev,
    "wasserstein": _wasserstein,
    "mse": _mse,
    "mae": _mae,
}

SIMILARITY_METRICS: frozenset[str] = frozenset({"ssim"})
"""Registered names whose value grows with similarity (1 = identical for SSIM)."""

PATCH_METRIC_DIRECTION: dict[str, str] = {
    name: "higher_is_more_similar" if name in SIMILARITY_METRICS else "lower_is_more_similar"
    for name in PATCH_DISTANCES
}
"""Direction of each registered metric: ``"lower_is_more_similar"`` (a distance, 0 when the
patches are identical) or ``"higher_is_more_similar"`` (a similarity: ``ssim``)."""

SPATIAL_METRICS: frozenset[str] = frozenset({"ssim"})
"""Registered names that need the spatial layout ``(B, H, W[, C])`` rather than ``(B, P)``."""


def paired_patch_distances(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    names: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """All requested metrics for a list of patch pairs of mixed sizes.

    Args:
        originals, reconstructions: ``q`` patches each, ``originals[k]`` and
            ``reconstructions[k]`` of the same shape ``(H, W)`` or ``(H, W, C)``; shapes may
            differ between ``k`` (zoom-out sizes, border-clipped patches).
        names: metric names from :data:`PATCH_DISTANCES` (default: all of them).

    Returns:
        ``{name: values}`` with ``values[k]`` the metric of pair ``k`` (float64, shape ``(q,)``),
        equal to ``PATCH_DISTANCES[name]`` applied to that pair. Patches are grouped by shape
        and each group is validated once, so each distinct shape is one vectorised call per
        metric.
    """
    selected = list(PATCH_DISTANCES) if names is None else list(names)
    unknown = [n for n in selected if n not in PATCH_DISTANCES]
    if unknown:
        raise ValueError(
            f"paired_patch_distances: unknown metric names {unknown}; "
            f"known: {sorted(PATCH_DISTANCES)}"
        )
    if len(originals) != len(reconstructions):
        raise ValueError(
            f"paired_patch_distances: {len(originals)} originals but "
            f"{len(reconstructions)} reconstructions"
        )
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, (o, r) in enumerate(zip(originals, reconstructions, strict=True)):
        shape = np.shape(o)
        if shape != np.shape(r):
            raise ValueError(
                f"paired_patch_distances: pair {k} has shapes {shape} and {np.shape(r)}"
            )
        if len(shape) not in (2, 3):
            raise ValueError(
                f"paired_patch_distances: patch {k} must be (H, W) or (H, W, C), got {shape}"
            )
        groups.setdefault(shape, []).append(k)
    out = {name: np.zeros(len(originals)) for name in selected}
    for shape, indices in groups.items():
        label = f"paired_patch_distances (patches of shape {shape})"
        x, y = _spatial_pair(
            np.stack([np.asarray(originals[k], dtype=np.float64) for k in indices]),
            np.stack([np.asarray(reconstructions[k], dtype=np.float64) for k in indices]),
            label,
        )
        u, v = _flatten(x), _flatten(y)
        for name in selected:
            if name == "ssim":
                out[name][indices] = _ssim(x, y)
                continue
            if name == "jensen_shannon":
                _check_non_negative(u, v, label)
            out[name][indices] = _chunked(_FLAT_KERNELS[name], u, v)
    return out
