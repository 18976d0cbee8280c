"""Difference images and what normal units teach about them (METHOD.md step 2).

- the paper's weighting mask W = 1 - norm(mean Delta) over m unseen normal images;
- ours, on top: per-pixel mean and standard deviation of the (lightly smoothed) difference over
  the same images, so that an image's difference can be read in units of normal variation
  (the ``standardized`` metric variant). With a blurry reconstruction every edge differs a
  little on every unit; W only damps the worst region, whereas the standardized difference
  asks "how unusual is this pixel's error for a normal unit at this position".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from vqganodip_pipeline.localize.feature_deviation import FeatureStatistics
from vqganodip_pipeline.localize.nearest_neighbour import MemoryBank


def difference_image(x: np.ndarray, x_hat: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Delta = |x - x_hat| averaged over channels, in [0, 1].

    Args:
        x, x_hat: (..., H, W, 3) ``uint8`` images (one or a stack).
        sigma: standard deviation in px of a Gaussian applied to x - x_hat (per channel) before
            the absolute value; 0 = none. A little smoothing removes one-pixel disagreements
            that a reconstruction at the model's effective resolution cannot avoid.
    Returns:
        (..., H, W) float32.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"image and reconstruction shapes differ: {x.shape} vs {x_hat.shape}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    diff = x.astype(np.float32) - x_hat.astype(np.float32)
    if sigma > 0:
        spatial = [0.0] * diff.ndim
        spatial[-3] = spatial[-2] = sigma
        diff = gaussian_filter(diff, spatial, mode="nearest")
    return np.abs(diff).mean(axis=-1) / 255.0


@dataclass(frozen=True)
class NormalVariation:
    """What m unseen normal images say about the difference at each pixel.

    Attributes:
        weights: the paper's W (H, W) in [0, 1], or None when the mask is switched off.
        mean, std: per-pixel mean and standard deviation (H, W) of the difference smoothed with
            ``sigma``, or None (no standardized variant).
        sigma: smoothing in px used for ``mean`` / ``std`` (and for standardizing an image).
        eps: floor added to ``std`` (difference units) so that flat, perfectly reconstructed
            pixels do not turn noise into huge scores.
        features: per-position backbone feature statistics of the same units
            (localize/feature_deviation.py), or None.
        memory: coreset memory bank of the same units' backbone features for the
            nearest-neighbour metrics (localize/nearest_neighbour.py), or None.
    """

    weights: np.ndarray | None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    sigma: float = 1.0
    eps: float = 0.01
    features: FeatureStatistics | None = None
    memory: MemoryBank | None = None

    def standardize(self, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        """z+ = max(0, (Delta_sigma - mean) / (std + eps)): the image's excess difference in
        units of normal variation, (H, W) float64 >= 0."""
        if self.mean is None or self.std is None:
            raise ValueError("no normal-variation statistics to standardize with")
        delta = difference_image(x, x_hat, self.sigma).astype(np.float64)
        if delta.shape != self.mean.shape:
            raise ValueError(f"statistics are {self.mean.shape}, the image is {delta.shape}")
        return np.maximum((delta - self.mean) / (self.std + self.eps), 0.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"sigma": np.float64(self.sigma), "eps": np.float64(self.eps)}
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.mean is not None and self.std is not None:
            arrays["variation_mean"] = self.mean.astype(np.float32)
            arrays["variation_std"] = self.std.astype(np.float32)
        if self.features is not None:
            arrays.update(self.features.to_arrays())
        if self.memory is not None:
            arrays.update(self.memory.to_arrays())
        return {k: np.asarray(v) for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NormalVariation:
        weights = arrays.get("weights")
        return cls(
            weights=None if weights is None or weights.size == 0 else weights,
            mean=arrays.get("variation_mean"),
            std=arrays.get("variation_std"),
            sigma=float(arrays.get("sigma", 1.0)),
            eps=float(arrays.get("eps", 0.01)),
            features=FeatureStatistics.from_arrays(arrays),
            memory=MemoryBank.from_arrays(arrays),
        )


def normal_variation(
    images: np.ndarray,
    reconstructions: np.ndarray,
    *,
    use_weights: bool = True,
    standardize: bool = True,
    sigma: float = 1.0,
    eps: float = 0.01,
) -> NormalVariation:
    """Statistics of m unseen normal images ((m, H, W, 3) ``uint8``) and their reconstructions."""
    if len(images) == 0:
        raise ValueError("normal variation needs at least one unseen normal image")
    weights = weighting_mask(difference_image(images, reconstructions)) if use_weights else None
    mean = std = None
    if standardize:
        smoothed = difference_image(images, reconstructions, sigma).astype(np.float64)
        mean, std = smoothed.mean(axis=0), smoothed.std(axis=0)
    return NormalVariation(weights=weights, mean=mean, std=std, sigma=sigma, eps=eps)


def weighting_mask(deltas: np.ndarray) -> np.ndarray:
    """W = 1 - norm(mean Delta) from the difference images of m unseen normal images.

    Pixels that the model reconstructs badly on normal units (high natural variation) get a
    weight near 0, stable pixels near 1. A constant mean difference gives W = 1 everywhere
    (nothing to down-weight).

    Args:
        deltas: (m, H, W) difference images in [0, 1].
    Returns:
        (H, W) float32 in [0, 1].
    """
    stack = np.asarray(deltas, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"expected (m, H, W) difference images with m >= 1, got {stack.shape}")
    mean = stack.mean(axis=0)
    lo, hi = float(mean.min()), float(mean.max())
    if hi - lo <= 1e-12:
        return np.ones_like(mean, dtype=np.float32)
    return (1.0 - (mean - lo) / (hi - lo)).astype(np.float32)


def align_to_reference(
    image: np.ndarray, reference: np.ndarray, method: str = "phase"
) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift ``image`` onto ``reference`` (both (H, W, 3) ``uint8``) for products that are not
    exactly at a fixed position; returns the aligned image and the (dy, dx) shift applied.

    ``phase``: sub-pixel phase correlation (scikit-image); ``none``: no alignment.
    """
    from scipy.ndimage import shift as nd_shift
    from skimage.registration import phase_cross_correlation

    if method == "none":
        return image, (0.0, 0.0)
    if method != "phase":
        raise ValueError(f"unknown alignment method {method!r}; expected 'phase' or 'none'")
    gray = image.astype(np.float64).mean(axis=-1)
    ref = reference.astype(np.float64).mean(axis=-1)
    offset, _, _ = phase_cross_correlation(ref, gray, upsample_factor=10)
    dy, dx = float(offset[0]), float(offset[1])
    shifted = nd_shift(image.astype(np.float64), (dy, dx, 0.0), order=1, mode="nearest")
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8), (dy, dx)
