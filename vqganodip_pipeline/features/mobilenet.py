"""ImageNet MobileNetV2 in plain PyTorch, for perceptual features without torchvision.

The module tree is exactly torchvision's ``mobilenet_v2()`` (``features.0`` ... ``features.18``,
``classifier.1``), so the offline weights in ``shared/data/weights`` (dequantized from Google's
TFLite model) load with ``strict=True``. Two things differ from torchvision, both required by
those weights:

* the five stride-2 3x3 convolutions use TensorFlow "SAME" padding: for an even input size the
  pad is 0 before and 1 after (torchvision pads 1 on both sides, which shifts every stride-2
  sampling grid by one pixel and changed 14 of 27 top-1 predictions in the weights' README);
  for an odd size TF pads symmetrically, so the pad is computed from each input's size;
* the input is RGB in [-1, 1] (``pixel / 127.5 - 1``), not ImageNet mean/std normalised.

BatchNorm was folded into the convolutions by TFLite (each BN is identity plus bias), so the
network is kept in eval mode whatever ``train()`` is asked for: batch statistics would destroy
the folded biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqganodip_pipeline.features.weights import load_weights_file

# (expand ratio t, output channels c, repeats n, first stride s) — torchvision / the MobileNetV2
# paper, width multiplier 1.0.
_INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
NUM_FEATURE_BLOCKS = 19
# Output stride (input pixels per feature-map cell, for input sizes divisible by 32) and channel
# count of each ``features`` block.
FEATURE_STRIDES: tuple[int, ...] = (
    2,
    2,
    4,
    4,
    8,
    8,
    8,
    16,
    16,
    16,
    16,
    16,
    16,
    16,
    32,
    32,
    32,
    32,
    32,
)
FEATURE_CHANNELS: tuple[int, ...] = (
    32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280,
)  # fmt: skip


def tf_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of length ``size`` px.

    The output length is ``ceil(size / stride)``; the total pad makes the last window fit and
    TF puts the odd pixel after (bottom / right).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` (same parameter names) with TF "SAME" padding computed per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv (no bias) -> BN -> ReLU6, keys ``0``/``1``."""
    if stride == 1:
        conv: nn.Conv2d = nn.Conv2d(
            in_channels, out_channels, kernel_size, 1, (kernel_size - 1) // 2,
            groups=groups, bias=False,
        )  # fmt: skip
    else:
        conv = Conv2dSame(
            in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=False
        )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (if t > 1) -> 3x3 depthwise -> 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0, 1000 ImageNet classes in torchvision's order).

    ``features[i]`` for i in 0..18 are the blocks whose outputs :meth:`feature_maps` returns;
    their channel counts and output strides are :data:`FEATURE_CHANNELS` /
    :data:`FEATURE_STRIDES` (for input sizes that are not multiples of the stride, each stride-2
    layer rounds up: ``ceil(size / 2)``).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        in_channels = 32
        blocks: list[nn.Module] = [_conv_bn_relu6(3, in_channels, stride=2)]
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                blocks.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        blocks.append(_conv_bn_relu6(in_channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(1280, num_classes))
        self.eval()

    def train(self, mode: bool = True) -> MobileNetV2:
        # Folded BN: batch statistics would replace the folded biases, so never leave eval mode.
        return super().train(False)

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB input of shape (N, 3, H, W), got {tuple(x.shape)}")

    def feature_maps(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the ``features`` blocks listed in ``layers``, in that order.

        ``x``: (N, 3, H, W) RGB in [-1, 1]. Block ``i`` has :data:`FEATURE_CHANNELS` ``[i]``
        channels at 1 / :data:`FEATURE_STRIDES` ``[i]`` of the input size (rounded up). Only the
        blocks up to ``max(layers)`` are run. Gradients flow back to ``x`` (a perceptual loss
        needs them); callers that only want features wrap the call in ``torch.no_grad()``.
        """
        self._check_input(x)
        wanted = [int(i) for i in layers]
        if not wanted:
            raise ValueError("layers must name at least one features block")
        bad = [i for i in wanted if not 0 <= i < NUM_FEATURE_BLOCKS]
        if bad:
            raise ValueError(f"layers {bad} out of range: features blocks are 0..18")
        keep = set(wanted)
        found: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.features[: max(wanted) + 1]):
            x = block(x)
            if i in keep:
                found[i] = x
        return [found[i] for i in wanted]

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1280) global-average-pooled penultimate features of ``x`` in [-1, 1]."""
        self._check_input(x)
        return self.features(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1000) ImageNet class logits of ``x``: (N, 3, H, W) RGB in [-1, 1]."""
        return self.classifier(self.pooled_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def load_mobilenet_v2(path: str | Path) -> MobileNetV2:
    """MobileNetV2 with the ImageNet weights of the state-dict file ``path`` (strict load).

    Raises ``FileNotFoundError`` naming ``path`` when it does not exist and ``ValueError`` when
    the file is not a readable state dict or its keys / shapes do not match the architecture.
    """
    model = MobileNetV2()
    load_weights_file(model, path, "MobileNetV2 (torchvision layout)")
    model.requires_grad_(False)
    return model.eval()
