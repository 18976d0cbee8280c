"""Feature backbones for perceptual patch distances.

A backbone maps images (N, 3, H, W) in [-1, 1] to a list of feature maps, the i-th at
``strides[i]`` input pixels per cell, aligned top-left (cell (r, c) looks mostly at pixels
[r*s, (r+1)*s) x [c*s, (c+1)*s)). Every metric computed with a backbone carries its ``name`` so a
table says which network made it.

- ``mobilenet_v2``: ImageNet MobileNetV2 from a local weights file (see features/mobilenet.py);
- ``vqgan_discriminator``: the trained PatchGAN discriminator's hidden layers (always available,
  trained on this product's normal images: the default without ImageNet weights);
- ``vqgan_encoder``: the trained VQGAN encoder's resolution levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from vqganodip_pipeline.features.mobilenet import FEATURE_STRIDES, load_mobilenet_v2

BACKBONES = ("mobilenet_v2", "vqgan_discriminator", "vqgan_encoder")


class FeatureBackbone(Protocol):
    name: str
    strides: tuple[int, ...]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]: ...


class MobileNetBackbone:
    """ImageNet MobileNetV2 feature blocks ``layers`` (default 3 and 6: strides 4 and 8)."""

    def __init__(self, weights_path: str | Path, layers: Sequence[int] = (3, 6)) -> None:
        self.model = load_mobilenet_v2(weights_path)
        self.layers = tuple(int(i) for i in layers)
        self.strides = tuple(FEATURE_STRIDES[i] for i in self.layers)
        self.name = "mobilenet_v2[" + ",".join(str(i) for i in self.layers) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.feature_maps(x, self.layers)


class DiscriminatorBackbone:
    """Hidden activations of a PatchGAN discriminator after each stride-2 convolution
    (strides 2, 4, 8, ...), optionally only the last ``n_taps`` of them."""

    def __init__(self, discriminator: nn.Module, n_taps: int = 2) -> None:
        self.discriminator = discriminator.eval()
        body = list(discriminator.main)  # type: ignore[attr-defined]
        self._taps: list[int] = []
        stride = 1
        strides = []
        for index, layer in enumerate(body):
            if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2):
                stride *= 2
                # the activation that follows the conv (and its BatchNorm)
                end = index + 1
                while end < len(body) and not isinstance(body[end], nn.LeakyReLU):
                    end += 1
                self._taps.append(end)
                strides.append(stride)
        if not self._taps:
            raise ValueError("the discriminator has no stride-2 convolution to take features from")
        n_taps = max(1, min(n_taps, len(self._taps)))
        self._taps = self._taps[-n_taps:]
        self.strides = tuple(strides[-n_taps:])
        self._body = body[: self._taps[-1] + 1]
        self.name = "vqgan_discriminator[" + ",".join(str(s) for s in self.strides) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        found = []
        for index, layer in enumerate(self._body):
            # LeakyReLU(inplace=True) would overwrite a tapped tensor: copy what we keep
            x = layer(x)
            if index in self._taps:
                found.append(x.clone())
        return found
