"""The ONNX Runtime and OpenVINO engines reconstruct as eager PyTorch does."""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.defs.release import Release
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.engines import CompiledVQGAN, compile_vqgan, export_onnx
from vqganodip_pipeline.model.reconstruct import reconstruct
from vqganodip_pipeline.model.vqgan import build_discriminator, build_vqgan


@pytest.fixture(scope="module")
def modules() -> tuple[torch.nn.Module, torch.nn.Module]:
    config = replace(vqgan_preset("tiny")[0], resolution=64)
    model = build_vqgan(config, seed=0).eval()
    return model, build_discriminator(config, seed=0).eval()


def boards(size: int, count: int) -> np.ndarray:
    layout = make_layout(0)
    return np.stack([render_unit(layout, size=size, seed=i)[0] for i in range(count)])


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engine_reconstructs_as_torch(engine: str, modules) -> None:
    pytest.importorskip(engine, reason=f"{engine} is not installed (pip install -e '.[engines]')")
    model, discriminator = modules
    images = boards(64, 5)
    expected = reconstruct(model, images, batch_size=2, discriminator=discriminator)
    compiled = compile_vqgan(model, engine)
    assert isinstance(compiled, CompiledVQGAN)
    # batches of 2, 2 and 1: the graph's batch axis is free
    got = reconstruct(compiled, images, batch_size=2, discriminator=discriminator)
    difference = np.abs(got.x_hat.astype(int) - expected.x_hat.astype(int))
    assert difference.max() <= 1  # float rounding before the uint8 cast, nothing more
    assert (difference > 0).mean() < 1e-3
    np.testing.assert_allclose(got.quant_loss, expected.quant_loss, rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(got.codes_used, expected.codes_used)
    np.testing.assert_allclose(got.mse, expected.mse, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(got.disc_logit_xhat, expected.disc_logit_xhat, atol=1e-3)
    # a size that is not a multiple of f: padded and cropped back like the torch path
    odd = boards(62, 2)
    assert reconstruct(compiled, odd, batch_size=2).x_hat.shape == (2, 62, 62, 3)
    assert (
        np.abs(reconstruct(compiled, odd).x_hat.astype(int) - reconstruct(model, odd).x_hat).max()
        <= 1
    )


def test_torch_engine_is_the_model_and_bad_requests_are_refused(modules, monkeypatch) -> None:
    model, _ = modules
    assert compile_vqgan(model, "torch") is model
    with pytest.raises(ValueError, match="engine must be one of"):
        compile_vqgan(model, "tensorrt")
    with pytest.raises(ValueError, match="not divisible"):
        export_onnx(model, model.f * 8 + 1, 64)
    # a missing runtime is an error naming the package, never a silent fall back to torch
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime.*engines"):
        compile_vqgan(model, "onnxruntime")


def test_compiled_engine_runs_cpu_fp32_only(modules) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model, _ = modules
    with pytest.raises(ValueError, match="CPU at its own precision"):
        reconstruct(compile_vqgan(model, "onnxruntime"), boards(64, 1), precision="bf16")
    # a model on an accelerator (here: torch's meta device) is refused when compiled
    elsewhere = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError, match="runs on the CPU; the VQGAN is on meta"):
        compile_vqgan(elsewhere, "onnxruntime")


def test_engine_enters_the_fingerprint_and_the_release_names_it() -> None:
    torch_settings = PipelineSettings(preset="tiny")
    assert "engine" not in torch_settings.fingerprint_fields()
    ort_settings = PipelineSettings(preset="tiny", engine="onnxruntime")
    assert ort_settings.fingerprint_fields()["engine"] == "onnxruntime"
    assert ort_settings.fingerprint() != torch_settings.fingerprint()
    with pytest.raises(ValueError, match="engine must be one of"):
        PipelineSettings(preset="tiny", engine="tensorrt").fingerprint()
    # releases written before the option have no engine in their settings: torch
    assert Release({"settings": {"preset": "tiny"}}, None).engine == "torch"  # type: ignore[arg-type]
    assert Release({"settings": ort_settings.fingerprint_fields()}, None).engine == "onnxruntime"  # type: ignore[arg-type]


def test_openvino_bf16_keeps_the_f32_code_map_and_decodes_in_bf16(modules) -> None:
    ov = pytest.importorskip("openvino", reason="openvino is not installed")
    from vqganodip_pipeline.model.engines import has_bf16_units

    model, discriminator = modules
    if not has_bf16_units(ov.Core()):
        with pytest.raises(ValueError, match="bf16 units"):
            compile_vqgan(model, "openvino-bf16")
        return
    images = boards(64, 5)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    compiled = compile_vqgan(model, "openvino-bf16")
    _, _, info = compiled(x)
    with torch.no_grad():
        _, _, expected_info = model.encode(x)
    # the encoder half runs in f32: the code map is eager PyTorch's, code for code
    np.testing.assert_array_equal(info.indices.numpy(), expected_info.indices.numpy())
    np.testing.assert_allclose(
        info.per_sample_loss.numpy(), expected_info.per_sample_loss.numpy(), rtol=1e-4
    )
    expected = reconstruct(model, images, batch_size=2, discriminator=discriminator)
    got = reconstruct(compiled, images, batch_size=2, discriminator=discriminator)
    np.testing.assert_array_equal(got.codes_used, expected.codes_used)
    difference = np.abs(got.x_hat.astype(int) - expected.x_hat.astype(int))
    # the decoder half runs in bf16 (8-bit mantissa): small differences in many pixels, unlike
    # the f32 engines' one grey level in < 0.1 % of them
    assert (difference > 0).mean() > 1e-3
    assert difference.mean() < 2.0
