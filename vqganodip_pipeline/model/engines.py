"""Inference engines for the VQGAN's reconstruction: eager PyTorch, ONNX Runtime or OpenVINO
(fp32, or with a bf16 decoder).

Training always runs in PyTorch. For reconstruction the trained VQGAN (encoder, quantizer,
decoder) can be exported to ONNX (``torch.onnx.export``, TorchScript exporter, opset 17) and run
by ONNX Runtime's or OpenVINO's CPU runtime, which fuse the convolutions and normalisations
that eager PyTorch runs one by one. On this project's 2-core CPU, idle, the demo VQGAN
reconstructed one 256 px image in 0.12 s (ONNX Runtime, OpenVINO) against 0.23 s for eager
fp32 PyTorch. Their reconstructions differ from PyTorch's by at most one grey level in about
0.02 % of the pixels, which moved a composite score by at most 1.3e-3
(``bench/bench_latency.py --engines``, ``bench/results/latency.json``).

``openvino-bf16`` splits the graph in two: the encoder, ``quant_conv`` and the quantizer run in
f32, so the code map is the one f32 gives (no near-tie flips of whole f x f blocks, the reason
that plain bf16 autocast is no drop-in: model/reconstruct.py); ``post_quant_conv`` and the
decoder run in bf16 on the CPU's bf16 units (AVX512-BF16 / AMX). It needs such a CPU and refuses
to start without one, since OpenVINO would otherwise quietly run f32 under the same name. Here,
idle, the demo VQGAN's 256 px reconstruction took 0.044 s against 0.085 s in OpenVINO f32; with
the VQGAN trained on a development synthetic seed its reconstructions differed from eager
PyTorch's by at most 2 grey levels in 17.5 % of the pixels, with the same code maps (README,
inference engines).

The exported graph gives, per image, the reconstruction, the code map and the VQ loss, which is
all :func:`~vqganodip_pipeline.model.reconstruct.reconstruct` reads. A near tie in the
quantizer's nearest-code search may go the other way under another engine's rounding, as with
bf16, so the engine is part of the settings fingerprint (defs/settings.py) and one engine serves
the calibration units and the new images alike.

The runtimes are optional packages (``pip install -e '.[engines]'``); asking for a missing one
is an error that names the package, never a silent fall back to PyTorch.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from vqganodip_pipeline.model.quantizer import QuantizerInfo
from vqganodip_pipeline.model.vqgan import VQGAN

ENGINES = ("torch", "onnxruntime", "openvino", "openvino-bf16")
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}


def check_engine(engine: str) -> None:
    """ValueError unless ``engine`` is one of :data:`ENGINES`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")


class _ReconstructionGraph(nn.Module):
    """The VQGAN's inference outputs as plain tensors: what the ONNX graph computes."""

    def __init__(self, model: VQGAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, _, info = self.model(x)
        return out, info.indices, info.per_sample_loss


class _EncoderGraph(nn.Module):
    """The encoder half: x -> (z_q, indices, per_sample_loss)."""

    def __init__(self, model: VQGAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, _, info = self.model.encode(x)
        return z_q, info.indices, info.per_sample_loss


class _DecoderGraph(nn.Module):
    """The decoder half: z_q -> x_hat."""

    def __init__(self, model: VQGAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z_q)


def _export(module: nn.Module, example: torch.Tensor, outputs: list[str]) -> bytes:
    """ONNX bytes of ``module`` (one input ``x``) traced on ``example``; the batch axis is free."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter warns that the input checks are traced as constants: the shape is fixed
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=outputs,
            dynamic_axes={"x": {0: "n"}, **{name: {0: "n"} for name in outputs}},
        )
    return buffer.getvalue()


def _check_size(model: VQGAN, height: int, width: int) -> None:
    if height % model.f or width % model.f:
        raise ValueError(f"{height} x {width} px is not divisible by the VQGAN's f = {model.f}")


def export_onnx(model: VQGAN, height: int, width: int) -> bytes:
    """The ONNX graph (bytes) of ``model``'s reconstruction of (N, 3, height, width) inputs in
    [-1, 1], N free: outputs ``x_hat`` (N, 3, H, W), ``indices`` (N, H / f, W / f) int64 and
    ``per_sample_loss`` (N,)."""
    _check_size(model, height, width)
    example = torch.zeros(1, 3, height, width)
    return _export(_ReconstructionGraph(model), example, ["x_hat", "indices", "per_sample_loss"])


def export_onnx_halves(model: VQGAN, height: int, width: int) -> tuple[bytes, bytes]:
    """The reconstruction of :func:`export_onnx` as two ONNX graphs: the encoder (input ``x``,
    outputs ``z_q`` (N, D, H / f, W / f), ``indices``, ``per_sample_loss``) and the decoder
    (input ``x`` = z_q, output ``x_hat``)."""
    _check_size(model, height, width)
    example = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        z_q = model.eval().encode(example)[0]
    encoder = _export(_EncoderGraph(model), example, ["z_q", "indices", "per_sample_loss"])
    return encoder, _export(_DecoderGraph(model), z_q, ["x_hat"])


def has_bf16_units(core: Any) -> bool:
    """True when OpenVINO's CPU plugin (``core``: an ``openvino.Core``) reports native bf16."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class CompiledVQGAN:
    """A trained VQGAN run by ONNX Runtime or OpenVINO on the CPU, called like the module:
    ``compiled(x) -> (x_hat, None, QuantizerInfo)`` for (N, 3, H, W) float32 inputs in [-1, 1].

    One graph is exported and compiled per input size (H, W), on first use; ``threads`` is the
    runtime's intra-op thread count (default: ``torch.get_num_threads()``). ``model`` stays
    available (its encoder serves as a feature backbone, its config as the release's).
    """

    def __init__(self, model: VQGAN, engine: str, threads: int | None = None) -> None:
        check_engine(engine)
        if engine == "torch":
            raise ValueError("engine 'torch' runs the module itself: use compile_vqgan")
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(
                f"the {engine} engine runs on the CPU; the VQGAN is on {device} (the device "
                "setting): use engine 'torch' on an accelerator"
            )
        self.model = model.eval()
        self.engine = engine
        self.threads = int(threads or torch.get_num_threads())
        self.f = model.f
        self.n_embed = model.quantize.n_embed
        self._runners: dict[tuple[int, int], Any] = {}
        self._runtime = import_runtime(engine)
        if engine == "openvino-bf16" and not has_bf16_units(self._runtime.Core()):
            raise ValueError(
                "engine 'openvino-bf16' needs a CPU with bf16 units (AVX512-BF16 or AMX), which "
                "OpenVINO does not report here: use 'openvino' (f32)"
            )

    def _compile_openvino(self, graph: bytes, precision: str) -> Any:
        """A callable ``x -> list of outputs`` of ``graph`` compiled by OpenVINO for the CPU."""
        core = self._runtime.Core()
        compiled = core.compile_model(
            core.read_model(graph),
            "CPU",
            {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": precision},
        )
        outputs = compiled.outputs
        return lambda x: (lambda r: [r[o] for o in outputs])(compiled(x))

    def _runner(self, height: int, width: int) -> Any:
        key = (height, width)
        if key not in self._runners and self.engine == "openvino-bf16":
            encoder_graph, decoder_graph = export_onnx_halves(self.model, height, width)
            encoder = self._compile_openvino(encoder_graph, "f32")
            decoder = self._compile_openvino(decoder_graph, "bf16")

            def run(x: np.ndarray) -> list[np.ndarray]:
                z_q, indices, per_sample = encoder(x)
                return [decoder(z_q)[0], indices, per_sample]

            self._runners[key] = run
        if key not in self._runners:
            graph = export_onnx(self.model, height, width)
            if self.engine == "onnxruntime":
                options = self._runtime.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                session = self._runtime.InferenceSession(
                    graph, options, providers=["CPUExecutionProvider"]
                )
                self._runners[key] = lambda x: session.run(None, {"x": x})
            else:
                self._runners[key] = self._compile_openvino(graph, "f32")
        return self._runners[key]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, None, QuantizerInfo]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        x_hat, indices, per_sample = self._runner(int(x.shape[2]), int(x.shape[3]))(array)
        codes = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        counts = torch.bincount(codes.reshape(-1), minlength=self.n_embed).float()
        probs = counts / counts.sum()
        used = int((counts > 0).sum())
        info = QuantizerInfo(
            indices=codes,
            perplexity=torch.exp(-(probs * torch.log(probs + 1e-10)).sum()),
            codes_used=used,
            usage=used / self.n_embed,
            per_sample_loss=torch.from_numpy(np.asarray(per_sample, dtype=np.float32)),
            z_e=torch.empty(0),  # not an output of the graph; no reconstruction reader uses it
        )
        return torch.from_numpy(np.asarray(x_hat, dtype=np.float32)), None, info


def import_runtime(engine: str) -> Any:
    """The runtime package of ``engine``; ImportError naming what to install when it is absent."""
    package = _PACKAGES[engine]
    try:
        return __import__(package)
    except ImportError as exc:
        raise ImportError(
            f"engine {engine!r} needs the {package!r} package (and 'onnx' for the export): "
            f"pip install -e '.[engines]'"
        ) from exc


def compile_vqgan(model: VQGAN, engine: str = "torch") -> VQGAN | CompiledVQGAN:
    """``model`` itself for ``engine="torch"``, else the model compiled for that runtime."""
    check_engine(engine)
    if engine == "torch":
        return model
    return CompiledVQGAN(model, engine)
