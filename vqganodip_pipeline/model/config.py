"""Configuration of the VQGAN (architecture, quantizer, discriminator) and of its training, with
the ``tiny`` / ``demo`` / ``paper`` presets.

Names follow taming-transformers (``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``,
``z_channels``, ``n_embed`` = K, ``embed_dim`` = D, ``disc_start``, ``disc_weight``) and the
paper (beta on the commitment term). Both dataclasses validate themselves on construction and
round-trip through plain dicts (``to_dict`` / ``from_dict``) for checkpoints and Dagster config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

CODEBOOK_UPDATES = ("loss", "ema")
PIXEL_LOSSES = ("l1", "mse")
GAN_LOSSES = ("hinge", "vanilla")
CODEBOOK_REMEDIES = ("none", "restart", "kmeans", "kmeans+restart")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda", "mps")
EARLY_STOPPING_METRICS = ("l1", "psnr")

_T = TypeVar("_T", "VQGANConfig", "TrainConfig")


def _fail(cls: str, name: str, value: Any, problem: str) -> None:
    raise ValueError(f"{cls}.{name}={value!r}: {problem}")


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown fields {unknown}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of encoder E, quantizer, decoder G and PatchGAN discriminator D.

    resolution: nominal (whole-image) input size in px; ``attn_resolutions`` are feature-map
        sizes at this input size. The network is fully convolutional: it trains on crops and
        reconstructs images of any size divisible by ``f``.
    ch, ch_mult, num_res_blocks: base channels, per-level multipliers, ResNet blocks per level;
        the downsampling factor is f = 2 ** (len(ch_mult) - 1).
    attn_resolutions: levels (by their size at ``resolution``) that get self-attention after
        each ResNet block; the middle block always has one.
    z_channels: channels of E's output / G's input; embed_dim (D): codebook vector size, with
        1x1 convs (quant_conv / post_quant_conv) in between; n_embed (K): number of codes.
    beta: weight of the commitment term ||sg[z_q] - E(x)||^2 (the paper's 0.25).
    codebook_update: "loss" (codebook term of the loss, taming) or "ema" (exponential moving
        average of assigned encoder outputs, decay ``ema_decay``; the codebook term is dropped).
    norm_groups: GroupNorm groups (taming: 32); every level's channel count must be divisible.
    disc_layers, disc_ch: pix2pix NLayerDiscriminator depth and base width.
    """

    resolution: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    z_channels: int = 256
    n_embed: int = 1024
    embed_dim: int = 256
    beta: float = 0.25
    codebook_update: str = "loss"
    ema_decay: float = 0.99
    norm_groups: int = 32
    disc_layers: int = 3
    disc_ch: int = 64

    def __post_init__(self) -> None:
        c = type(self).__name__
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if not self.ch_mult or min(self.ch_mult) < 1:
            _fail(c, "ch_mult", self.ch_mult, "needs at least one level, multipliers >= 1")
        for name in ("ch", "num_res_blocks", "z_channels", "embed_dim", "norm_groups"):
            if getattr(self, name) < 1:
                _fail(c, name, getattr(self, name), "must be >= 1")
        if self.n_embed < 2:
            _fail(c, "n_embed", self.n_embed, "the codebook needs K >= 2 codes")
        if self.resolution < 1 or self.resolution % self.f:
            _fail(
                c, "resolution", self.resolution,
                f"must be a positive multiple of the downsampling factor f = {self.f} "
                f"(2 ** (len(ch_mult) - 1) with ch_mult={self.ch_mult})",
            )  # fmt: skip
        levels = self.level_resolutions
        stray = [r for r in self.attn_resolutions if r not in levels]
        if stray:
            _fail(
                c, "attn_resolutions", self.attn_resolutions,
                f"{stray} match no level; level sizes at resolution {self.resolution} are {levels}",
            )  # fmt: skip
        for width in {self.ch * m for m in self.ch_mult} | {self.ch}:
            if width % self.norm_groups:
                _fail(c, "norm_groups", self.norm_groups, f"does not divide channel count {width}")
        if not 0.0 <= self.dropout < 1.0:
            _fail(c, "dropout", self.dropout, "must be in [0, 1)")
        if self.beta < 0:
            _fail(c, "beta", self.beta, "must be >= 0")
        if self.codebook_update not in CODEBOOK_UPDATES:
            _fail(c, "codebook_update", self.codebook_update, f"must be one of {CODEBOOK_UPDATES}")
        if not 0.0 < self.ema_decay < 1.0:
            _fail(c, "ema_decay", self.ema_decay, "must be in (0, 1)")
        if self.disc_layers < 1 or self.disc_ch < 1:
            _fail(c, "disc_layers/disc_ch", (self.disc_layers, self.disc_ch), "must be >= 1")

    @property
    def f(self) -> int:
        """Downsampling factor of the encoder (input px per latent cell)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Feature-map size of each encoder level for a ``resolution`` x ``resolution`` input."""
        return tuple(self.resolution // 2**i for i in range(len(self.ch_mult)))

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VQGANConfig:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """Training of a VQGAN on normal images.

    steps, batch_size: optimiser steps and images per step; lr, betas: Adam for the autoencoder
        (and for D unless ``disc_lr`` is set).
    disc_start: first step at which D is trained and the GAN term enters the generator loss;
        disc_weight scales the adaptive weight lambda; gan_loss: "hinge" or "vanilla" (log D).
    pixel_loss: "l1" (taming) or "mse" (the paper); pixel_weight, codebook_weight,
        perceptual_weight: loss weights; perceptual_weights_path: ImageNet MobileNetV2 state dict
        (None -> the fixed random-conv-net fallback of :mod:`.perceptual`); perceptual_layers:
        backbone blocks used.
    codebook_remedy: "none", "restart" (codes unused for ``restart_every`` steps are reset to
        random encoder outputs), "kmeans" (codebook initialised by k-means on the first batch's
        encoder outputs) or "kmeans+restart".
    crop_size: side of the random square training crops in px (None: whole images).
    checkpoint_every, eval_every, log_every: in steps; early stopping stops after
        ``early_stopping_patience`` evaluations (None: never) without an improvement of more
        than ``min_delta`` in the validation ``early_stopping_metric`` ("l1": mean |x - x_hat|
        in [0, 1] units, lower is better; "psnr" in dB, higher is better).
    device: "auto" / "cpu" / "cuda" / "mps"; precision: "auto" (bf16 on CPUs with bf16 support
        and on CUDA, else fp32), "bf16", "fp16" (CUDA), "fp32"; channels_last: NHWC memory
        layout (off by default: with GroupNorm it measured slower on CPU, see
        bench/results/vqgan.json); num_threads: torch CPU threads during training (None: leave
        torch's setting; restored afterwards).
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    disc_lr: float | None = None
    disc_start: int = 500
    disc_weight: float = 0.8
    gan_loss: str = "hinge"
    pixel_loss: str = "l1"
    pixel_weight: float = 1.0
    codebook_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_weights_path: str | None = None
    perceptual_layers: tuple[int, ...] | None = None
    codebook_remedy: str = "restart"
    restart_every: int = 50
    crop_size: int | None = None
    checkpoint_every: int = 500
    eval_every: int = 250
    log_every: int = 10
    early_stopping_patience: int | None = None
    min_delta: float = 0.0
    early_stopping_metric: str = "l1"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        c = type(self).__name__
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.perceptual_layers is not None:
            object.__setattr__(
                self, "perceptual_layers", tuple(int(i) for i in self.perceptual_layers)
            )
        for name in ("steps", "batch_size", "checkpoint_every", "eval_every", "log_every"):
            if int(getattr(self, name)) < 1:
                _fail(c, name, getattr(self, name), "must be >= 1")
        if self.restart_every < 1:
            _fail(c, "restart_every", self.restart_every, "must be >= 1")
        if self.lr <= 0 or (self.disc_lr is not None and self.disc_lr <= 0):
            _fail(c, "lr/disc_lr", (self.lr, self.disc_lr), "learning rates must be > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            _fail(c, "betas", self.betas, "needs two Adam betas in [0, 1)")
        if self.disc_start < 0:
            _fail(c, "disc_start", self.disc_start, "must be >= 0")
        for name in ("disc_weight", "pixel_weight", "codebook_weight", "perceptual_weight"):
            if getattr(self, name) < 0:
                _fail(c, name, getattr(self, name), "must be >= 0")
        choices = {
            "gan_loss": GAN_LOSSES,
            "pixel_loss": PIXEL_LOSSES,
            "codebook_remedy": CODEBOOK_REMEDIES,
            "precision": PRECISIONS,
            "device": DEVICES,
            "early_stopping_metric": EARLY_STOPPING_METRICS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                _fail(c, name, getattr(self, name), f"must be one of {allowed}")
        if self.crop_size is not None and self.crop_size < 1:
            _fail(c, "crop_size", self.crop_size, "must be >= 1 px or None (whole images)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            _fail(c, "early_stopping_patience", self.early_stopping_patience, "must be >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            _fail(c, "num_threads", self.num_threads, "must be >= 1 or None")
        if self.min_delta < 0:
            _fail(c, "min_delta", self.min_delta, "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


def check_compatible(config: VQGANConfig, train_config: TrainConfig) -> None:
    """Raise ``ValueError`` when the training crop does not suit the architecture."""
    crop = train_config.crop_size
    if crop is not None and crop % config.f:
        raise ValueError(
            f"TrainConfig.crop_size={crop} is not a multiple of the downsampling factor "
            f"f = {config.f} of VQGANConfig.ch_mult={config.ch_mult}"
        )
    if crop is not None and crop > config.resolution:
        raise ValueError(
            f"TrainConfig.crop_size={crop} exceeds VQGANConfig.resolution={config.resolution}"
        )


def _tiny() -> tuple[VQGANConfig, TrainConfig]:
    config = VQGANConfig(
        resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
        z_channels=16, n_embed=32, embed_dim=16, norm_groups=8, disc_layers=2, disc_ch=16,
    )  # fmt: skip
    train = TrainConfig(
        steps=40, batch_size=4, lr=2e-3, disc_start=30, disc_weight=0.8, perceptual_weight=0.1,
        codebook_remedy="restart", restart_every=10, crop_size=None, checkpoint_every=20,
        eval_every=20, log_every=5, device="cpu", precision="fp32", channels_last=False,
    )  # fmt: skip
    return config, train


def _demo() -> tuple[VQGANConfig, TrainConfig]:
    # Chosen by measurement on the shared 2-core CPU (bench/bench_vqgan.py, bench/results/
    # vqgan.json): 200 synthetic 256 px boards, 64 px crops (8 per step), f = 8 so that a
    # defect of a few px cannot be copied through the 32 x 32 code map, K = 256 codes of D = 32.
    # ch = 16 at full resolution keeps a step cheap (~25-38 crops/s on one busy core); the
    # 1500 steps take ~5.5 min there. Without a perceptual term: at equal wall time neither
    # the MobileNetV2 term (1200 steps: 21.7 dB held-out PSNR, defect/normal error ratio 1.91)
    # nor the random-net fallback (1200 steps: 21.2 dB, 1.60) beat spending the time on more
    # steps (1500 steps: 21.6 dB, 1.93). D starts late and light (disc_weight 0.2): it
    # sharpened edges (lower error on normal texture) once reconstructions were reasonable.
    # One torch thread: on the shared 2-core CPU two OpenMP threads ran up to 60x slower
    # (their barriers spin while the other core is busy); one thread is never far off.
    config = VQGANConfig(
        resolution=256, ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(),
        z_channels=64, n_embed=256, embed_dim=32, norm_groups=8, disc_layers=2, disc_ch=32,
    )  # fmt: skip
    train = TrainConfig(
        steps=1500, batch_size=8, lr=4e-4, disc_start=1100, disc_weight=0.2,
        perceptual_weight=0.0, pixel_loss="l1", codebook_remedy="kmeans+restart",
        restart_every=50, crop_size=64, checkpoint_every=250, eval_every=250, log_every=25,
        early_stopping_patience=None, device="auto", precision="auto", channels_last=False,
        num_threads=1,
    )  # fmt: skip
    return config, train


def _paper() -> tuple[VQGANConfig, TrainConfig]:
    # taming's f16 architecture (ch 128, ch_mult 1,1,2,2,4, two ResNet blocks, attention at the
    # lowest level) on 1024 px inputs: the lowest level is 64 x 64. Codebook K = 2048, D = 512
    # as in the paper; lr follows taming's base_lr 4.5e-6 x batch size.
    config = VQGANConfig(
        resolution=1024, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
        attn_resolutions=(64,), z_channels=512, n_embed=2048, embed_dim=512, norm_groups=32,
        disc_layers=3, disc_ch=64,
    )  # fmt: skip
    train = TrainConfig(
        steps=200_000, batch_size=4, lr=4.5e-6 * 4, disc_start=30_000, disc_weight=0.8,
        perceptual_weight=1.0, pixel_loss="mse", codebook_remedy="restart", restart_every=200,
        crop_size=None, checkpoint_every=5000, eval_every=2500, log_every=50,
        early_stopping_patience=8, device="auto", precision="auto", channels_last=True,
    )  # fmt: skip
    return config, train


_PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
PRESET_NAMES = tuple(_PRESETS)


def with_downsampling(config: VQGANConfig, f: int) -> VQGANConfig:
    """``config`` with the downsampling factor ``f`` (input px per code; a power of two >= 2).

    The encoder keeps its first ``log2(f) + 1`` levels, or repeats its last multiplier to reach
    them: demo's f = 8 ``ch_mult=(1, 2, 4, 4)`` becomes ``(1, 2, 4)`` at f = 4 and
    ``(1, 2, 4, 4, 4)`` at f = 16. Attention levels that no longer exist are dropped (the middle
    block keeps its own, at the lowest level). A smaller ``f`` gives a finer code map (64 x 64
    codes at 256 px and f = 4): sharper reconstructions of normal detail, but a defect of a
    few px is more easily copied through, so the trade is measured per product
    (bench/bench_vqgan.py ``--downsampling``).
    """
    if f < 2 or f & (f - 1):
        raise ValueError(f"downsampling factor f={f!r}: must be a power of two >= 2")
    levels = f.bit_length()  # log2(f) + 1
    ch_mult = config.ch_mult[:levels] + (config.ch_mult[-1],) * max(0, levels - len(config.ch_mult))
    resolutions = {config.resolution // 2**i for i in range(levels)}
    attention = tuple(r for r in config.attn_resolutions if r in resolutions)
    return dataclasses.replace(config, ch_mult=ch_mult, attn_resolutions=attention)


def vqgan_preset(name: str) -> tuple[VQGANConfig, TrainConfig]:
    """(architecture, training) configs of the named preset: "tiny", "demo" or "paper"."""
    if name not in _PRESETS:
        raise ValueError(f"unknown VQGAN preset {name!r}; choose one of {list(PRESET_NAMES)}")
    config, train = _PRESETS[name]()
    check_compatible(config, train)
    return config, train
