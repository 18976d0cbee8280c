"""Batched, memory-bounded reconstruction of uint8 images with a trained VQGAN, plus the
image-level side outputs the metric table needs (quantization loss, discriminator logits,
perceptual distance, codes used, MSE).

Images are streamed in batches of ``batch_size``: only one batch exists as a float tensor at a
time; the result holds uint8 reconstructions and one float per image and metric. Sizes not
divisible by the downsampling factor f are reflect-padded up to the next multiple of f and the
reconstruction is cropped back.

``model`` is a trained VQGAN or the same model compiled for another inference engine
(model/engines.py: ONNX Runtime or OpenVINO on the CPU, which set their own precision: fp32, or
OpenVINO's bf16 decoder); the side outputs are the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqganodip_pipeline.model.engines import CompiledVQGAN
from vqganodip_pipeline.model.quantizer import QuantizerInfo
from vqganodip_pipeline.model.runtime import autocast, resolve_device, resolve_precision
from vqganodip_pipeline.model.tensors import images_to_tensor, tensor_to_images
from vqganodip_pipeline.model.vqgan import VQGAN


@dataclass
class Reconstruction:
    """Reconstructions and per-image side outputs (arrays of length N, in input order).

    x_hat: (N, H, W, 3) uint8. mse: mean squared error of x_hat vs x with pixels in [0, 1].
    quant_loss: the image's VQ loss ((1 + beta) * mean ||z_e - z_q||^2 with a loss-updated
    codebook, beta * ... with EMA). codes_used: distinct codes in the image's code map.
    disc_logit_x / disc_logit_xhat: mean PatchGAN logit on x and on x_hat (NaN without a
    discriminator). perceptual: perceptual distance of x_hat to x (NaN without one). x_hat is
    the rounded uint8 image, and the metrics are computed on it, so they can be recomputed from
    stored images. seconds: wall time of the whole call.
    """

    x_hat: np.ndarray
    mse: np.ndarray
    quant_loss: np.ndarray
    codes_used: np.ndarray
    disc_logit_x: np.ndarray
    disc_logit_xhat: np.ndarray
    perceptual: np.ndarray
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.x_hat) / self.seconds if self.seconds > 0 else float("nan")


def _as_image_batches(
    images: np.ndarray | Iterable[np.ndarray], batch_size: int
) -> Iterator[np.ndarray]:
    """Yield uint8 (n <= batch_size, H, W, 3) arrays from an array or an iterable of images /
    image stacks, refusing a change of image size (the result is one stacked array)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, np.ndarray):
        items: Iterable[np.ndarray] = [images]
    else:
        items = images
    pending: list[np.ndarray] = []
    pending_n = 0
    size: tuple[int, int] | None = None
    for item in items:
        array = np.asarray(item)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (H, W, 3) or (N, H, W, 3); got {array.dtype} {array.shape}"
            )
        if size is None:
            size = (array.shape[1], array.shape[2])
        elif size != (array.shape[1], array.shape[2]):
            raise ValueError(
                f"all images must share one size to be stacked: got {size} then "
                f"{array.shape[1:3]}; reconstruct differently sized images in separate calls"
            )
        start = 0
        while start < len(array):
            take = min(batch_size - pending_n, len(array) - start)
            pending.append(array[start : start + take])
            pending_n += take
            start += take
            if pending_n == batch_size:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, pending_n = [], 0
    if pending_n:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def pad_to_multiple(x: torch.Tensor, f: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) at the bottom / right up to multiples of ``f`` (reflect, or replicate
    when the image is too small to reflect). Returns the padded tensor and the original (H, W)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % f, (-w) % f
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def _model_device(model: VQGAN | CompiledVQGAN) -> torch.device:
    if isinstance(model, CompiledVQGAN):
        return torch.device("cpu")
    return next(model.parameters()).device


@dataclass
class _BatchOutput:
    images: np.ndarray
    x: torch.Tensor
    x_hat_images: np.ndarray
    x_hat: torch.Tensor
    info: QuantizerInfo


def iter_reconstructions(
    model: VQGAN | CompiledVQGAN,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    batch_size: int = 8,
    device: torch.device | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Iterator[_BatchOutput]:
    """Per batch: input uint8, input tensor, reconstructed uint8, the tensor of the uint8
    reconstruction (both in [-1, 1]) and the quantizer info. Runs under ``torch.no_grad``."""
    device = device or _model_device(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for batch in _as_image_batches(images, batch_size):
        x = images_to_tensor(batch, device)
        with torch.no_grad(), autocast(device, precision):
            padded, (h, w) = pad_to_multiple(x, model.f)
            out, _, info = model(padded.contiguous(memory_format=memory_format))
        x_hat_images = tensor_to_images(out[:, :, :h, :w].float())
        # Metrics use the rounded uint8 reconstruction, the image that is stored downstream.
        x_hat = images_to_tensor(x_hat_images, device)
        yield _BatchOutput(batch, x, x_hat_images, x_hat, info)


def reconstruct(
    model: VQGAN | CompiledVQGAN,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    discriminator: nn.Module | None = None,
    perceptual: nn.Module | None = None,
) -> Reconstruction:
    """Reconstruct uint8 RGB images ((N, H, W, 3) array, or an iterable of (H, W, 3) images or
    (n, H, W, 3) stacks, all of one size) in batches of ``batch_size``.

    ``device``: None keeps the model where it is; a name ("cpu", "cuda", "mps", "auto") moves
    the model (and the discriminator / perceptual net) there. ``precision``: "fp32" (default),
    "auto", "bf16" or "fp16" (see :func:`.runtime.resolve_precision`). bf16 is ~1.6-1.8x
    faster on this CPU but not a drop-in: the encoder's rounding flips near-tie code
    assignments, which changed whole 8 x 8 blocks of a trained demo model's output (mean
    |fp32 - bf16| 2 gray levels, max 187; bench/results/vqgan.json), so reconstructions that
    feed metrics and weighting masks should all use one precision. The modules are switched to eval
    mode for the call and restored afterwards. ``perceptual`` is a callable module
    ``(x, x_hat) -> (N,)`` such as :class:`.perceptual.PerceptualLoss`.
    """
    target = _model_device(model) if device is None else resolve_device(device)
    resolved = resolve_precision(precision, target)
    if isinstance(model, CompiledVQGAN) and (target.type != "cpu" or resolved != "fp32"):
        raise ValueError(
            f"the {model.engine} engine runs on the CPU at its own precision (pass precision "
            f"fp32); got device {target.type}, precision {resolved} (use engine 'torch' for those)"
        )
    modules = [m for m in (model, discriminator, perceptual) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.to(target).eval()
        if channels_last and target.type == "cpu":
            m.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    outputs: list[np.ndarray] = []
    stats: dict[str, list[np.ndarray]] = {
        k: [] for k in ("mse", "quant_loss", "codes_used", "disc_x", "disc_xhat", "perceptual")
    }
    try:
        for out in iter_reconstructions(
            model, images, batch_size=batch_size, device=target, precision=resolved,
            channels_last=channels_last and target.type == "cpu",
        ):  # fmt: skip
            n = len(out.images)
            outputs.append(out.x_hat_images)
            diff = (out.images.astype(np.float32) - out.x_hat_images.astype(np.float32)) / 255.0
            stats["mse"].append(np.mean(diff**2, axis=(1, 2, 3), dtype=np.float64))
            stats["quant_loss"].append(out.info.per_sample_loss.float().cpu().numpy())
            flat = out.info.indices.reshape(n, -1)
            stats["codes_used"].append(
                np.array([int(torch.unique(row).numel()) for row in flat], dtype=np.int64)
            )
            nan = np.full(n, np.nan)
            with torch.no_grad(), autocast(target, resolved):
                if discriminator is not None:
                    stats["disc_x"].append(_mean_logit(discriminator, out.x))
                    stats["disc_xhat"].append(_mean_logit(discriminator, out.x_hat))
                else:
                    stats["disc_x"].append(nan)
                    stats["disc_xhat"].append(nan)
                if perceptual is not None:
                    stats["perceptual"].append(
                        perceptual(out.x, out.x_hat).float().cpu().numpy().astype(np.float64)
                    )
                else:
                    stats["perceptual"].append(nan)
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    if not outputs:
        raise ValueError("reconstruct() got no images")
    return Reconstruction(
        x_hat=np.concatenate(outputs),
        mse=np.concatenate(stats["mse"]),
        quant_loss=np.concatenate(stats["quant_loss"]).astype(np.float64),
        codes_used=np.concatenate(stats["codes_used"]),
        disc_logit_x=np.concatenate(stats["disc_x"]),
        disc_logit_xhat=np.concatenate(stats["disc_xhat"]),
        perceptual=np.concatenate(stats["perceptual"]),
        seconds=time.perf_counter() - start,
    )


def _mean_logit(discriminator: nn.Module, x: torch.Tensor) -> np.ndarray:
    logits = discriminator(x).float()
    return logits.mean(dim=(1, 2, 3)).cpu().numpy().astype(np.float64)


def reconstruct_image(
    model: VQGAN,
    image: np.ndarray,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Reconstruct one (H, W, 3) uint8 image of any size: reflect-padded to multiples of f,
    reconstructed, cropped back to (H, W, 3)."""
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) image, got shape {array.shape}")
    result = reconstruct(model, array[None], batch_size=1, device=device, precision=precision)
    return result.x_hat[0]
