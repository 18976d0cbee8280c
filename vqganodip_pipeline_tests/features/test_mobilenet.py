"""MobileNetV2: strict weight loading, TF "SAME" padding, feature-map shapes, clear errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqganodip_pipeline.features.mobilenet import (
    FEATURE_CHANNELS,
    FEATURE_STRIDES,
    Conv2dSame,
    MobileNetV2,
    load_mobilenet_v2,
    tf_same_padding,
)

STRIDE2_CONVS = (
    "features.0.0",
    "features.2.conv.1.0",
    "features.4.conv.1.0",
    "features.7.conv.1.0",
    "features.14.conv.1.0",
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Small inputs: one thread avoids OpenMP barrier spinning on the shared 2-core CPU.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def net(mobilenet_weights: Path) -> MobileNetV2:
    return load_mobilenet_v2(mobilenet_weights)


def _symmetric_copy(model: MobileNetV2) -> MobileNetV2:
    """The same weights with torchvision's symmetric padding 1 on the stride-2 convs."""
    sym = copy.deepcopy(model)
    for module in sym.modules():
        if isinstance(module, Conv2dSame):
            module.__class__ = torch.nn.Conv2d
            module.padding = (1, 1)
    return sym


def _natural_image(name: str) -> torch.Tensor:
    """A bundled scikit-image photo, centre-cropped and resized to 224 px, in [-1, 1]."""
    data = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    image = getattr(data, name)()[..., :3]
    h, w = image.shape[:2]
    s = min(h, w)
    image = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    image = resize(image, (224, 224), anti_aliasing=True, preserve_range=True)
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0


def test_weights_load_strict_and_stride2_convs_use_same_padding(net: MobileNetV2) -> None:
    modules = dict(net.named_modules())
    assert [name for name, m in modules.items() if isinstance(m, Conv2dSame)] == list(STRIDE2_CONVS)
    reference = MobileNetV2().state_dict()
    assert list(net.state_dict()) == list(reference)
    assert not net.training
    net.train()  # folded BN: must stay in eval mode
    assert not any(m.training for m in net.modules())


def test_imagenet_predictions_on_natural_photos(net: MobileNetV2) -> None:
    # ImageNet (torchvision order): 281-285 domestic cats, 967 espresso, 657 missile /
    # 744 projectile.
    with torch.no_grad():
        cat = net.logits(_natural_image("chelsea")).softmax(-1)[0]
        coffee = net.logits(_natural_image("coffee")).softmax(-1)[0]
        rocket = net.logits(_natural_image("rocket")).softmax(-1)[0]
    assert torch.isfinite(cat).all()
    assert int(cat.argmax()) in range(281, 286)
    assert float(cat[281:286].sum()) > 0.8
    assert int(coffee.argmax()) == 967
    assert int(rocket.argmax()) in (657, 744)


@pytest.mark.parametrize(
    ("size", "expected"), [(224, (0, 1)), (225, (1, 1)), (7, (1, 1)), (8, (0, 1))]
)
def test_tf_same_padding_values(size: int, expected: tuple[int, int]) -> None:
    assert tf_same_padding(size, 3, 2) == expected
    assert tf_same_padding(size, 3, 1) == (1, 1)


@pytest.mark.parametrize(("h", "w"), [(16, 16), (15, 17)])
def test_conv2d_same_matches_explicit_tf_padding(h: int, w: int) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, 3, 2, 0, bias=True)
    x = torch.randn(2, 4, h, w)
    pad = (*tf_same_padding(w, 3, 2), *tf_same_padding(h, 3, 2))
    expected = F.conv2d(F.pad(x, pad), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-2:] == (-(-h // 2), -(-w // 2))
    if h % 2 == 0:  # even: pad bottom/right only, so it differs from symmetric padding
        symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
        assert not torch.allclose(conv(x), symmetric)


def test_tf_padding_is_a_7px_shift_of_symmetric_padding(net: MobileNetV2) -> None:
    # With pad (0, 1) a stride-2 conv centres output i on input pixel 2i + 1; symmetric pad 1
    # centres it on 2i. Through the three stride-2 convs up to block 6 (stride 8) that is a
    # shift of 1 + 2 + 4 = 7 px: sym(x)[cell] == tf(x shifted by 7 px)[cell] away from borders.
    # Padding (1, 0) or (1, 1) would instead give sym(x) == tf(x) in the interior.
    sym = _symmetric_copy(net)
    big = _natural_image("chelsea")
    big = F.interpolate(big, size=(288, 288), mode="bilinear", align_corners=False)
    crop = big[..., 32:288, 32:288]
    shifted = big[..., 25:281, 25:281]
    with torch.no_grad():
        s = sym.feature_maps(crop, (6,))[0][..., 4:-4, 4:-4]
        t = net.feature_maps(shifted, (6,))[0][..., 4:-4, 4:-4]
        t_same_input = net.feature_maps(crop, (6,))[0][..., 4:-4, 4:-4]
    torch.testing.assert_close(t, s, atol=1e-4, rtol=1e-4)
    assert (t_same_input - s).abs().max() > 0.1 * s.abs().max()


def test_feature_maps_shapes_strides_and_order() -> None:
    model = MobileNetV2()
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    layers = (17, 3, 6, 13, 0)
    maps = model.feature_maps(x, layers)
    assert len(maps) == len(layers)
    for layer, fmap in zip(layers, maps, strict=True):
        stride = FEATURE_STRIDES[layer]
        assert fmap.shape == (2, FEATURE_CHANNELS[layer], 64 // stride, 96 // stride)
    odd = model.feature_maps(torch.zeros(1, 3, 100, 75), (3, 17))
    assert odd[0].shape[-2:] == (25, 19)  # ceil(ceil(s / 2) / 2)
    assert odd[1].shape[-2:] == (4, 3)
    assert model.logits(x).shape == (2, 1000)
    with pytest.raises(ValueError, match=r"0\.\.18"):
        model.feature_maps(x, (19,))
    with pytest.raises(ValueError, match="at least one"):
        model.feature_maps(x, ())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.feature_maps(torch.zeros(1, 1, 32, 32), (3,))


def test_feature_maps_pass_gradients_to_input() -> None:
    model = MobileNetV2()
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    model.feature_maps(x, (3,))[0].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_missing_or_wrong_weights_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mobilenet.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_mobilenet_v2(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        load_mobilenet_v2(garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"features.0.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="missing keys"):
        load_mobilenet_v2(wrong)
    state = MobileNetV2().state_dict()
    state["classifier.1.weight"] = torch.zeros(10, 1280)
    shaped = tmp_path / "shaped.pt"
    torch.save(state, shaped)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_mobilenet_v2(shaped)
