"""Feature backbones for perceptual patch distances.

A backbone maps images (N, 3, H, W) in [-1, 1] to a list of feature maps, the i-th at
``strides[i]`` input pixels per cell, aligned top-left (cell (r, c) looks mostly at pixels
[r*s, (r+1)*s) x [c*s, (c+1)*s)). Every metric computed with a backbone carries its ``name`` so a
table says which network made it.

- ``mobilenet_v2``: ImageNet MobileNetV2 from a local weights file (see features/mobilenet.py);
- ``vgg16``: ImageNet VGG16 (relu3_3, relu4_3) from a local torchvision weights file
  (features/vgg.py; torchvision itself is not needed);
- ``inception_v3``: ImageNet Inception-v3 (Mixed_5d, Mixed_6e), the network FID is defined with,
  from a local torchvision weights file (features/inception.py);
- ``vqgan_discriminator``: the trained PatchGAN discriminator's hidden layers (always available,
  trained on this product's normal images: the default without ImageNet weights);
- ``vqgan_encoder``: the trained VQGAN encoder's downsampled resolution levels (always
  available).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from vqganodip_pipeline.features import vgg
from vqganodip_pipeline.features.inception import load_inception_v3
from vqganodip_pipeline.features.mobilenet import FEATURE_STRIDES, load_mobilenet_v2

BACKBONES = ("mobilenet_v2", "vgg16", "inception_v3", "vqgan_discriminator", "vqgan_encoder")
# backbones that need an ImageNet weights file
IMAGENET_BACKBONES = ("mobilenet_v2", "vgg16", "inception_v3")


class FeatureBackbone(Protocol):
    name: str
    strides: tuple[int, ...]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]: ...


# MobileNetV2's feature blocks used unless PipelineSettings.backbone_layers says otherwise
DEFAULT_MOBILENET_LAYERS: tuple[int, ...] = (3, 6)


class MobileNetBackbone:
    """ImageNet MobileNetV2 feature blocks ``layers`` (default 3 and 6: strides 4 and 8)."""

    def __init__(
        self, weights_path: str | Path, layers: Sequence[int] = DEFAULT_MOBILENET_LAYERS
    ) -> None:
        self.layers = tuple(int(i) for i in layers)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"MobileNetV2 layers must be distinct blocks, got {self.layers}")
        bad = [i for i in self.layers if not 0 <= i < len(FEATURE_STRIDES)]
        if bad:
            raise ValueError(f"MobileNetV2 layers {bad} out of range: blocks are 0..18")
        self.model = load_mobilenet_v2(weights_path)
        self.strides = tuple(FEATURE_STRIDES[i] for i in self.layers)
        self.name = "mobilenet_v2[" + ",".join(str(i) for i in self.layers) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.feature_maps(x, self.layers)


class VGG16Backbone:
    """ImageNet VGG16 ReLU outputs ``layers`` (default relu3_3 and relu4_3: strides 4 and 8)."""

    def __init__(
        self, weights_path: str | Path, layers: Sequence[str] = ("relu3_3", "relu4_3")
    ) -> None:
        unknown = [name for name in layers if name not in vgg.NAMED_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layers {unknown}; expected {list(vgg.NAMED_LAYERS)}")
        indices = sorted(vgg.NAMED_LAYERS[name] for name in layers)
        self.model = vgg.load_vgg16(weights_path, indices)
        self.strides = tuple(vgg.FEATURE_STRIDES[i] for i in indices)
        names = sorted(layers, key=vgg.NAMED_LAYERS.__getitem__)
        self.name = "vgg16[" + ",".join(names) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.feature_maps(x)


class InceptionBackbone:
    """ImageNet Inception-v3 blocks ``blocks`` (default Mixed_5d and Mixed_6e: strides 8, 16),
    on the top-left-aligned grid (features/inception.py)."""

    def __init__(
        self, weights_path: str | Path, blocks: Sequence[str] = ("Mixed_5d", "Mixed_6e")
    ) -> None:
        self.model = load_inception_v3(weights_path, blocks)
        self.strides = self.model.strides
        self.name = "inception_v3[" + ",".join(self.model.blocks) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.feature_maps(x)


class EncoderBackbone:
    """Outputs of the trained VQGAN encoder's downsampling levels (strides 2, 4, ..., f),
    optionally only the last ``n_taps`` of them. Each Downsample pads only the bottom and
    right, so cell (r, c) of a stride-s level is anchored at pixel (r*s, c*s)."""

    def __init__(self, encoder: nn.Module, n_taps: int = 2) -> None:
        self.encoder = encoder.eval()
        levels = list(encoder.down)  # type: ignore[attr-defined]
        downsampling = [
            i for i, level in enumerate(levels) if not isinstance(level.resample, nn.Identity)
        ]
        if not downsampling:
            raise ValueError("the encoder has no downsampling level to take features from")
        n_taps = max(1, min(n_taps, len(downsampling)))
        self._taps = downsampling[-n_taps:]
        self.strides = tuple(2 ** (i + 1) for i in self._taps)
        self.name = "vqgan_encoder[" + ",".join(str(s) for s in self.strides) + "]"

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.encoder.conv_in(x)  # type: ignore[attr-defined]
        found = []
        for index, level in enumerate(self.encoder.down):  # type: ignore[attr-defined]
            if index > self._taps[-1]:
                break
            h = level(h)
            if index in self._taps:
                found.append(h)
        return found


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
