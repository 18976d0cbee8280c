"""Architecture, quantizer, losses and configs of the VQGAN (no training loop)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vqganodip_pipeline.model.config import (
    TrainConfig,
    VQGANConfig,
    check_compatible,
    vqgan_preset,
    with_downsampling,
)
from vqganodip_pipeline.model.discriminator import NLayerDiscriminator
from vqganodip_pipeline.model.losses import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    pixel_loss,
)
from vqganodip_pipeline.model.perceptual import build_perceptual
from vqganodip_pipeline.model.quantizer import (
    VectorQuantizer,
    kmeans_init,
    restart_dead_codes,
)
from vqganodip_pipeline.model.vqgan import build_vqgan

SMALL = {
    "ch": 8, "num_res_blocks": 1, "z_channels": 8, "n_embed": 16, "embed_dim": 4,
    "norm_groups": 4, "disc_layers": 2, "disc_ch": 8,
}  # fmt: skip


@pytest.mark.parametrize(
    ("ch_mult", "resolution", "attn", "size"),
    [
        ((1, 2), 32, (16,), (32, 32)),
        ((1, 1, 2), 32, (8,), (32, 48)),
        ((1, 2, 2, 2), 64, (8, 16), (40, 64)),
    ],
)
def test_shapes_for_several_architectures(
    ch_mult: tuple[int, ...], resolution: int, attn: tuple[int, ...], size: tuple[int, int]
) -> None:
    config = VQGANConfig(resolution=resolution, ch_mult=ch_mult, attn_resolutions=attn, **SMALL)
    model = build_vqgan(config, seed=0).eval()
    f = 2 ** (len(ch_mult) - 1)
    assert config.f == f
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        x_hat, loss, info = model(x)
    assert x_hat.shape == x.shape
    assert info.indices.shape == (2, size[0] // f, size[1] // f)
    assert info.per_sample_loss.shape == (2,)
    assert torch.isfinite(x_hat).all() and torch.isfinite(loss)
    assert 1 <= info.codes_used <= config.n_embed
    assert 1.0 <= float(info.perplexity) <= config.n_embed + 1e-3


def test_model_for_small_crops_runs_on_larger_nonsquare_images() -> None:
    config = VQGANConfig(resolution=32, ch_mult=(1, 2, 2), attn_resolutions=(8,), **SMALL)
    model = build_vqgan(config, seed=0).eval()
    with torch.no_grad():
        out_small, _, _ = model(torch.zeros(1, 3, 16, 16))
        out_big, _, info = model(torch.zeros(1, 3, 96, 160))
    assert out_small.shape == (1, 3, 16, 16)
    assert out_big.shape == (1, 3, 96, 160)
    assert info.indices.shape == (1, 24, 40)
    with pytest.raises(ValueError, match="not divisible by the downsampling factor f = 4"):
        model(torch.zeros(1, 3, 30, 32))


def test_gradients_reach_the_encoder_through_the_quantizer() -> None:
    config = VQGANConfig(resolution=32, ch_mult=(1, 2), attn_resolutions=(), **SMALL)
    model = build_vqgan(config, seed=0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat, _, _ = model(x)
    # Reconstruction loss only: without straight-through the encoder would get no gradient.
    (x_hat - x).abs().mean().backward()
    for name in ("encoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_quantizer_returns_the_nearest_code_like_brute_force() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(37, 5, max_distance_elements=37 * 7)  # forces 7-row chunks
    quantizer.embedding.weight.data.normal_()
    z = torch.randn(3, 5, 4, 6)
    z_q, _, info = quantizer(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(flat, quantizer.codebook).argmin(dim=1)
    assert torch.equal(info.indices.flatten(), brute)
    torch.testing.assert_close(
        z_q.permute(0, 2, 3, 1).reshape(-1, 5), quantizer.codebook[brute], rtol=1e-6, atol=1e-6
    )


def test_codebook_and_commitment_loss_by_hand() -> None:
    quantizer = VectorQuantizer(2, 2, beta=0.25)
    quantizer.embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # Two positions: (0.2, 0.1) -> code 0, (0.7, 0.9) -> code 1.
    z = torch.tensor([[[[0.2, 0.7]], [[0.1, 0.9]]]], requires_grad=True)  # (1, 2, 1, 2)
    z_q, loss, info = quantizer(z)
    assert info.indices.tolist() == [[[0, 1]]]
    squared = (0.2**2 + 0.1**2 + 0.3**2 + 0.1**2) / 4  # mean over the 4 elements
    assert float(loss.detach()) == pytest.approx(squared * (1 + 0.25))
    assert float(info.per_sample_loss[0]) == pytest.approx(squared * 1.25)
    assert info.codes_used == 2 and float(info.perplexity) == pytest.approx(2.0)
    loss.backward()
    # d/dz of beta * mean((sg[z_q] - z)^2) = 2 * beta * (z - z_q) / 4.
    expected = 2 * 0.25 * (z.detach() - z_q.detach()) / 4
    torch.testing.assert_close(z.grad, expected)
    grad_codes = quantizer.embedding.weight.grad
    # Codebook term pulls each used code to its assigned latent: 2 * (e - z) / 4.
    torch.testing.assert_close(
        grad_codes, torch.tensor([[-0.1, -0.05], [0.15, 0.05]]), rtol=1e-5, atol=1e-6
    )


def test_ema_quantizer_moves_codes_towards_assigned_latents() -> None:
    quantizer = VectorQuantizer(2, 1, beta=0.25, update="ema", ema_decay=0.5)
    quantizer.set_codes(torch.tensor([0, 1]), torch.tensor([[0.0], [10.0]]))
    z = torch.tensor([2.0, 2.0, 9.0]).view(1, 1, 1, 3)
    quantizer.train()
    _, loss, _ = quantizer(z)
    # cluster sizes 0.5*1 + 0.5*{2, 1} = {1.5, 1.0}; sums 0.5*{0, 10} + 0.5*{4, 9} = {2, 9.5}.
    size = torch.tensor([1.5, 1.0])
    n = size.sum()
    smoothed = (size + 1e-5) / (n + 2e-5) * n
    expected = torch.tensor([2.0, 9.5]) / smoothed
    torch.testing.assert_close(quantizer.codebook.flatten(), expected)
    assert not quantizer.embedding.weight.requires_grad
    # EMA mode: only the commitment term, against the codes before this pass's update.
    assert float(loss) == pytest.approx(0.25 * (4 + 4 + 1) / 3)


def test_dead_code_restart_revives_unused_codes() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, 2)
    quantizer.embedding.weight.data = torch.tensor([[0.0, 0.0]] + [[100.0, 100.0]] * 7)
    z = torch.randn(4, 2, 4, 4)  # all near the origin: only code 0 is ever used
    _, _, before = quantizer(z)
    assert before.codes_used == 1
    dead = torch.ones(8, dtype=torch.bool)
    dead[0] = False
    n = restart_dead_codes(quantizer, z, dead, generator=torch.Generator().manual_seed(0))
    assert n == 7
    _, _, after = quantizer(z)
    assert after.codes_used == 8
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in quantizer.codebook[1:]:  # every revived code sits on an encoder output
        assert torch.isclose(flat, code).all(dim=1).any()


def test_kmeans_init_beats_random_codes() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    points = centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=generator)
    quantizer = VectorQuantizer(4, 2)
    random_error = float(
        ((points - quantizer.codebook.detach()[quantizer.nearest(points)]) ** 2).mean()
    )
    error = kmeans_init(quantizer, points, generator=generator)
    assert error < 0.05 < random_error
    assert len(set(quantizer.nearest(points).tolist())) == 4


def test_adaptive_weight_equals_gradient_norm_ratio() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    x = torch.tensor([0.5, -2.0])
    out = w @ x  # (2,)
    rec = (out**2).sum()  # grad = 2 * out x^T
    gan = -(out * torch.tensor([1.0, 3.0])).sum()  # grad = -[1, 3] x^T
    lam = adaptive_weight(rec, gan, w, disc_weight=0.5)
    out_d = (w @ x).detach()
    rec_norm = torch.linalg.norm(2 * torch.outer(out_d, x))
    gan_norm = torch.linalg.norm(torch.outer(torch.tensor([1.0, 3.0]), x))
    assert float(lam) == pytest.approx(0.5 * float(rec_norm / (gan_norm + 1e-6)), rel=1e-6)
    assert not lam.requires_grad
    # Clamped at 1e4 when the GAN gradient vanishes.
    zero_gan = (w * 0.0).sum()
    assert float(adaptive_weight((w**2).sum(), zero_gan, w)) == pytest.approx(1e4)


def test_gan_and_pixel_losses_by_hand() -> None:
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.0])
    assert float(generator_loss(fake, "hinge")) == pytest.approx(1.0)
    assert float(generator_loss(fake, "vanilla")) == pytest.approx(
        (math.log1p(math.exp(2.0)) + math.log(2.0)) / 2
    )
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(0.5 * (0.25 + 0.5))
    vanilla = 0.5 * (
        (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5))) / 2
        + (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    )
    assert float(discriminator_loss(real, fake, "vanilla")) == pytest.approx(vanilla)
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([0.5, -1.0])
    assert float(pixel_loss(a, b, "l1")) == pytest.approx(1.25)
    assert float(pixel_loss(a, b, "mse")) == pytest.approx((0.25 + 4.0) / 2)
    with pytest.raises(ValueError, match="'l1' or 'mse'"):
        pixel_loss(a, b, "l2")


def test_patchgan_gives_one_logit_per_patch() -> None:
    disc = NLayerDiscriminator(3, 8, n_layers=3)
    assert disc(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)  # pix2pix 70 px patches
    assert disc(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 6, 10)


def test_perceptual_fallback_distance_and_record() -> None:
    perceptual = build_perceptual(None, seed=3)
    assert perceptual.record == "fallback:random_convnet(seed=3)"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    same = perceptual(x, x.clone())
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-6, rtol=0)
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    noisy = x + 0.05 * torch.randn_like(x)
    d_blur, d_noise = perceptual(x, blurred), perceptual(x, noisy)
    assert (d_blur > 0).all() and (d_noise > 0).all()
    x_hat = blurred.clone().requires_grad_(True)
    perceptual(x, x_hat).sum().backward()
    assert x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        build_perceptual("missing.pt")


def test_perceptual_mobilenet_record(mobilenet_weights) -> None:
    perceptual = build_perceptual(mobilenet_weights)
    assert perceptual.record.startswith("mobilenet_v2:sha256=")
    assert len(perceptual.record.split("=")[1]) == 64
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert float(perceptual(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(perceptual(x, -x)) > 0.1


def test_config_validation_errors() -> None:
    with pytest.raises(
        ValueError, match=r"resolution=100.*multiple of the downsampling factor f = 8"
    ):
        VQGANConfig(resolution=100, ch_mult=(1, 2, 2, 4), attn_resolutions=())
    with pytest.raises(ValueError, match=r"n_embed=1.*K >= 2"):
        VQGANConfig(n_embed=1)
    with pytest.raises(ValueError, match=r"attn_resolutions.*\[7\] match no level"):
        VQGANConfig(attn_resolutions=(7,))
    with pytest.raises(ValueError, match="norm_groups=32: does not divide channel count 48"):
        VQGANConfig(ch=48)
    with pytest.raises(ValueError, match="pixel_loss='l2'"):
        TrainConfig(pixel_loss="l2")
    with pytest.raises(ValueError, match="codebook_remedy"):
        TrainConfig(codebook_remedy="magic")
    config = VQGANConfig(resolution=64, ch_mult=(1, 2, 2), attn_resolutions=())
    with pytest.raises(
        ValueError, match="crop_size=30 is not a multiple of the downsampling factor f = 4"
    ):
        check_compatible(config, TrainConfig(crop_size=30))
    with pytest.raises(ValueError, match=r"unknown VQGAN preset 'huge'.*'tiny', 'demo', 'paper'"):
        vqgan_preset("huge")
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        VQGANConfig.from_dict({"colour": 1})


def test_config_dict_round_trip_and_presets() -> None:
    for name in ("tiny", "demo", "paper"):
        config, train = vqgan_preset(name)
        assert VQGANConfig.from_dict(config.to_dict()) == config
        assert TrainConfig.from_dict(train.to_dict()) == train
    paper, paper_train = vqgan_preset("paper")
    assert (paper.resolution, paper.n_embed, paper.embed_dim, paper.beta) == (1024, 2048, 512, 0.25)
    assert paper_train.pixel_loss == "mse"


def test_with_downsampling_changes_the_code_map_and_nothing_else() -> None:
    demo, _ = vqgan_preset("demo")
    assert demo.f == 8 and with_downsampling(demo, 8) == demo
    fine = with_downsampling(demo, 4)
    assert (fine.f, fine.ch_mult) == (4, (1, 2, 4))
    coarse = with_downsampling(demo, 16)
    assert (coarse.f, coarse.ch_mult) == (16, (1, 2, 4, 4, 4))
    assert dataclasses.replace(fine, ch_mult=demo.ch_mult) == demo
    # the code map follows f: a 32 px input gives 16, 8 and 4 cells a side at f = 2, 4, 8
    small = VQGANConfig(resolution=32, ch_mult=(1, 2, 2), attn_resolutions=(8,), **SMALL)
    for f, cells in ((2, 16), (4, 8), (8, 4)):
        model = build_vqgan(with_downsampling(small, f)).eval()
        with torch.no_grad():
            z = model.encode_latent(torch.zeros(1, 3, 32, 32))
        assert z.shape[-2:] == (cells, cells), f
    # attention of a level that is gone is dropped, one that remains is kept
    paper, _ = vqgan_preset("paper")
    assert paper.attn_resolutions == (64,) and with_downsampling(paper, 8).attn_resolutions == ()
    assert with_downsampling(small, 4).attn_resolutions == (8,)
    assert with_downsampling(small, 2).attn_resolutions == ()
    for bad in (0, 1, 3, 6):
        with pytest.raises(ValueError, match=f"f={bad}: must be a power of two >= 2"):
            with_downsampling(demo, bad)
