"""VGG16, Inception-v3 and VQGAN-encoder backbones: torchvision's weights layout loads without
torchvision, feature grids are aligned as the patch distances assume, and bad weights files get
errors naming them."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vqganodip_pipeline.features import inception
from vqganodip_pipeline.features.backbones import EncoderBackbone, InceptionBackbone, VGG16Backbone
from vqganodip_pipeline.features.inception import load_inception_v3, stem_cells
from vqganodip_pipeline.features.vgg import NAMED_LAYERS, load_vgg16
from vqganodip_pipeline.localize.patch_distance import (
    image_features,
    patch_distances_fast,
    patch_distances_regions,
)
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.vqgan import build_vqgan
from vqganodip_pipeline.pipeline import build_backbone

SHAPES = json.loads(
    (Path(__file__).parent / "data" / "torchvision_state_dict_shapes.json").read_text()
)
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def _torchvision_file(tmp_path: Path, network: str, seed: int = 0) -> Path:
    """A state-dict file with torchvision's exact keys (recorded from torchvision 0.29.1) and
    shapes, He-initialised convolutions and neutral BatchNorms. VGG16's classifier (400 MB of
    fully connected weights the backbone never builds) is stored as one-element placeholders."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in SHAPES[network].items():
        if network == "vgg16" and key.startswith("classifier."):
            state[key] = torch.zeros(1)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
            state[key] = torch.ones(shape)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        else:  # biases and running means
            state[key] = torch.zeros(shape)
    path = tmp_path / f"{network}.pth"
    torch.save(state, path)
    return path


def _board(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    x_hat = x.copy()
    x_hat[40:52, 44:60] = 255 - x_hat[40:52, 44:60]
    return x, x_hat


def test_vgg16_loads_torchvisions_layout_and_ignores_the_classifier(tmp_path: Path) -> None:
    path = _torchvision_file(tmp_path, "vgg16")
    model = load_vgg16(path, [NAMED_LAYERS["relu3_3"], NAMED_LAYERS["relu4_3"]])
    stored = torch.load(path, weights_only=True)
    torch.testing.assert_close(model.features[17].weight, stored["features.17.weight"])
    assert len(model.features) == 23  # built up to relu4_3 only
    maps = model.feature_maps(torch.zeros(1, 3, 64, 48))
    assert [tuple(m.shape) for m in maps] == [(1, 256, 16, 12), (1, 512, 8, 6)]


def test_inception_loads_torchvisions_layout_up_to_the_deepest_block(tmp_path: Path) -> None:
    path = _torchvision_file(tmp_path, "inception_v3")
    model = load_inception_v3(path, ["Mixed_5d"])
    stored = torch.load(path, weights_only=True)
    torch.testing.assert_close(
        model.Mixed_5d.branch_pool.bn.running_var, stored["Mixed_5d.branch_pool.bn.running_var"]
    )
    assert not hasattr(model, "Mixed_6a")
    # a file saved before BatchNorm counted its steps still loads
    old = {k: v for k, v in stored.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    load_inception_v3(tmp_path / "old.pth", ["Mixed_6e"])


@pytest.mark.parametrize("network", ["vgg16", "inception_v3"])
def test_bad_weights_files_get_errors_naming_the_file(tmp_path: Path, network: str) -> None:
    loader = {
        "vgg16": lambda p: load_vgg16(p, [15]),
        "inception_v3": lambda p: load_inception_v3(p, ["Mixed_5b"]),
    }[network]
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        loader(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        loader(garbage)
    state = torch.load(_torchvision_file(tmp_path, network), weights_only=True)
    first = {"vgg16": "features.0.weight", "inception_v3": "Conv2d_1a_3x3.conv.weight"}[network]
    truncated = {k: v for k, v in state.items() if k != first}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(ValueError, match=r"truncated\.pth.*1 missing keys"):
        loader(tmp_path / "truncated.pth")
    mobilenet_like = dict(state, **{"features.18.0.weight": torch.zeros(1)})
    if network == "inception_v3":
        torch.save(mobilenet_like, tmp_path / "other.pth")
        with pytest.raises(ValueError, match="1 unexpected keys"):
            loader(tmp_path / "other.pth")
    reshaped = dict(state, **{first: torch.zeros(2, 2)})
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(ValueError, match="1 shape mismatches"):
        loader(tmp_path / "reshaped.pth")


def test_inception_stem_geometry_matches_torchvision_and_the_aligned_grid() -> None:
    # torchvision documents 35 x 35 (Mixed_5*) and 17 x 17 (Mixed_6*) maps for 299 px input
    assert stem_cells(299) == (35, 17)
    # centres of the cells, from the layers' own kernel sizes, strides and paddings
    model = inception.InceptionV3Features(["Mixed_6e"])
    start, step = 0.0, 1.0  # input pixel of cell 0's centre, px between cells
    for layer in (
        model.Conv2d_1a_3x3.conv,
        model.Conv2d_2a_3x3.conv,
        model.Conv2d_2b_3x3.conv,
        model.maxpool1,
        model.Conv2d_3b_1x1.conv,
        model.Conv2d_4a_3x3.conv,
        model.maxpool2,
    ):
        kernel, stride, padding = (
            (v if isinstance(v, int) else v[0])
            for v in (layer.kernel_size, layer.stride, layer.padding)
        )
        start += ((kernel - 1) / 2 - padding) * step
        step *= stride
    mixed_5_start = start - inception.STEM_OFFSET
    branch = model.Mixed_6a.branch3x3.conv
    mixed_6_start = start + (branch.kernel_size[0] - 1) / 2 * step - inception.STEM_OFFSET
    for stride, first in ((8, mixed_5_start), (16, mixed_6_start)):
        assert abs(first - (stride / 2 - 0.5)) <= 2.5, (stride, first)
    for size in (37, 64, 100, 256):
        maps = model.feature_maps(torch.zeros(1, 3, size, size + 8))
        assert [tuple(m.shape[-2:]) for m in maps] == [
            (math.ceil(size / 16), math.ceil((size + 8) / 16))
        ]


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (optional)")
def test_vgg16_and_inception_equal_torchvision(tmp_path: Path) -> None:
    import torchvision

    vgg = torchvision.models.vgg16().eval()
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    ours = load_vgg16(tmp_path / "vgg.pth", [8, 22])
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = [vgg.features[: i + 1](((x + 1) / 2 - mean) / std) for i in (8, 22)]
        for got, want in zip(ours.feature_maps(x), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    net = net.eval()
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    ours_inception = load_inception_v3(tmp_path / "inception.pth", ["Mixed_6e"])
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        h = ours_inception.stem(x)
        reference = x
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1"):
            reference = getattr(net, name)(reference)
        for name in ("Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"):
            reference = getattr(net, name)(reference)
        torch.testing.assert_close(h, reference, rtol=1e-5, atol=1e-5)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6e"):
            if name == "Mixed_6e":
                for skipped in ("Mixed_6c", "Mixed_6d"):
                    h = getattr(ours_inception, skipped)(h)
                    reference = getattr(net, skipped)(reference)
            h = getattr(ours_inception, name)(h)
            reference = getattr(net, name)(reference)
            torch.testing.assert_close(h, reference, rtol=1e-4, atol=1e-4)


def test_vqgan_encoder_backbone_taps_the_downsampling_levels() -> None:
    config, _ = vqgan_preset("tiny")
    model = build_vqgan(config, seed=0).eval()
    backbone = EncoderBackbone(model.encoder)
    factor = 2 ** (len(config.ch_mult) - 1)
    assert backbone.strides[-1] == factor and len(backbone.strides) == min(
        2, len(config.ch_mult) - 1
    )
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    maps = backbone.feature_maps(x)
    for m, stride in zip(maps, backbone.strides, strict=True):
        assert tuple(m.shape[-2:]) == (64 // stride, 48 // stride)
    # the deepest tap is what the encoder's last downsampling level produces
    with torch.no_grad():
        h = model.encoder.conv_in(x)
        for level in model.encoder.down[: backbone._taps[-1] + 1]:
            h = level(h)
    torch.testing.assert_close(maps[-1], h)


@pytest.mark.parametrize("network", ["vgg16", "inception_v3", "vqgan_encoder"])
def test_every_backbone_scores_patches_on_both_paths(tmp_path: Path, network: str) -> None:
    config, _ = vqgan_preset("tiny")
    model = build_vqgan(config, seed=0).eval()
    weights = None if network == "vqgan_encoder" else _torchvision_file(tmp_path, network)
    choice = build_backbone(
        network, weights_path=weights, discriminator=None, encoder=model.encoder
    )
    assert choice.backbone.name.startswith(network)
    x, x_hat = _board(1)
    patches = np.array([[40, 44, 16], [0, 0, 16], [80, 80, 16], [44, 48, 8]])
    features = image_features(choice.backbone, x, x_hat)
    whole = patch_distances_fast(features, patches)
    assert np.all(np.isfinite(whole)) and whole[0] > 0
    same = patch_distances_fast(image_features(choice.backbone, x, x), patches)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    regions = patch_distances_regions(choice.backbone, x, x_hat, patches, context=32)
    assert np.all(np.isfinite(regions)) and regions[0] > 0


def test_build_backbone_needs_the_weights_or_model_it_names(tmp_path: Path) -> None:
    missing = tmp_path / "vgg16-absent.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_backbone("vgg16", weights_path=missing, discriminator=None)
    with pytest.raises(FileNotFoundError, match="inception_v3 needs a local weights file"):
        build_backbone("inception_v3", weights_path=None, discriminator=None)
    with pytest.raises(ValueError, match="needs the trained VQGAN encoder"):
        build_backbone("vqgan_encoder", weights_path=None, discriminator=None)
    assert isinstance(
        build_backbone(
            "vgg16", weights_path=_torchvision_file(tmp_path, "vgg16"), discriminator=None
        ).backbone,
        VGG16Backbone,
    )
    choice = build_backbone(
        "inception_v3", weights_path=_torchvision_file(tmp_path, "inception_v3"), discriminator=None
    )
    assert isinstance(choice.backbone, InceptionBackbone) and choice.backbone.strides == (8, 16)
