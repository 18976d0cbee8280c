"""Conversions between image arrays (``uint8`` N x H x W x 3) and model tensors (float N x 3 x H x W
in [-1, 1]), the VQGAN's input convention."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) ``uint8`` -> float32 (N, 3, H, W) in [-1, 1]."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) ``uint8`` (values clamped, rounded)."""
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected a tensor of shape (N, 3, H, W), got {tuple(tensor.shape)}")
    scaled = (tensor.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
