"""The VQGAN reconstruction model: E -> quant_conv -> quantizer -> post_quant_conv -> G."""

from __future__ import annotations

import torch
from torch import nn

from vqganodip_pipeline.model.config import VQGANConfig
from vqganodip_pipeline.model.discriminator import NLayerDiscriminator
from vqganodip_pipeline.model.modules import Decoder, Encoder
from vqganodip_pipeline.model.quantizer import QuantizerInfo, VectorQuantizer


class VQGAN(nn.Module):
    """VQGAN autoencoder for images in [-1, 1], NCHW, H and W divisible by ``config.f``.

    ``forward(x) -> (x_hat, L_VQ, info)``; :meth:`encode` / :meth:`decode` /
    :meth:`decode_indices` expose the halves; :attr:`last_layer` is the decoder output conv
    weight used by the adaptive GAN weight.
    """

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        arch = {
            "ch": config.ch,
            "ch_mult": config.ch_mult,
            "num_res_blocks": config.num_res_blocks,
            "attn_resolutions": config.attn_resolutions,
            "dropout": config.dropout,
            "resolution": config.resolution,
            "z_channels": config.z_channels,
            "norm_groups": config.norm_groups,
        }
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantize = VectorQuantizer(
            config.n_embed,
            config.embed_dim,
            beta=config.beta,
            update=config.codebook_update,
            ema_decay=config.ema_decay,
        )
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def f(self) -> int:
        return self.config.f

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.f or x.shape[3] % self.f:
            raise ValueError(
                f"image size {tuple(x.shape[2:])} is not divisible by the downsampling factor "
                f"f = {self.f}; pad it (see reconstruct.reconstruct_image) or crop it"
            )

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latent z_e = quant_conv(E(x)), (N, D, H / f, W / f)."""
        self._check_input(x)
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerInfo]:
        """x -> (z_q, L_VQ, info) with z_q (N, D, H / f, W / f)."""
        return self.quantize(self.encode_latent(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Image from a code map (N, h, w) of codebook indices."""
        return self.decode(self.quantize.lookup(indices))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerInfo]:
        z_q, loss, info = self.encode(x)
        return self.decode(z_q), loss, info


def build_vqgan(config: VQGANConfig, seed: int | None = None) -> VQGAN:
    """A freshly initialised VQGAN; with ``seed`` the init is reproducible and leaves the global
    torch RNG untouched."""
    if seed is None:
        return VQGAN(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VQGAN(config)


def build_discriminator(config: VQGANConfig, seed: int | None = None) -> NLayerDiscriminator:
    """The PatchGAN discriminator of ``config`` (seeded like :func:`build_vqgan`)."""
    if seed is None:
        return NLayerDiscriminator(3, config.disc_ch, config.disc_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NLayerDiscriminator(3, config.disc_ch, config.disc_layers)
