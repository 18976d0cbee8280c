"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``, as used by taming-transformers).

Each output logit judges one receptive-field patch of the input (70 x 70 px for 3 layers), so a
256 px image yields a 30 x 30 logit map and a crop-trained D scores whole images unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn


def _init_weights(module: nn.Module) -> None:
    # pix2pix / taming init: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """``n_layers`` stride-2 4x4 convs (widths ndf * min(2**i, 8)), one stride-1 conv and a
    1-channel 4x4 output conv; BatchNorm and LeakyReLU(0.2) in between.

    Input: (N, 3, H, W) in [-1, 1]; output: (N, 1, H', W') raw logits, one per patch.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)
