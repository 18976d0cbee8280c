"""The pipeline's settings resource: preset, device, optional ImageNet weights, work folder."""

import functools
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import dagster as dg

from vqganodip_pipeline.features.backbones import DEFAULT_MOBILENET_LAYERS
from vqganodip_pipeline.features.mobilenet import NUM_FEATURE_BLOCKS
from vqganodip_pipeline.hashing import hash_strings
from vqganodip_pipeline.metrics.table import LocalizeConfig
from vqganodip_pipeline.model.config import (
    TrainConfig,
    VQGANConfig,
    check_compatible,
    vqgan_preset,
    with_downsampling,
)
from vqganodip_pipeline.model.engines import CompiledVQGAN, check_engine, compile_vqgan
from vqganodip_pipeline.model.vqgan import VQGAN
from vqganodip_pipeline.presets import Preset, get_preset


class PipelineSettings(dg.ConfigurableResource):
    """Scale and compute settings shared by the model-side and batch assets.

    ``weights_path``: a local ImageNet MobileNetV2 state dict for perceptual features (patch
    distances and the VQGAN perceptual loss). Empty: the documented fallback (the trained VQGAN
    discriminator's features; a discriminator feature loss during training) is used and said.
    ``backbone``: the patch/feature backbone (``auto``, ``mobilenet_v2``, ``vgg16``,
    ``inception_v3``, ``vqgan_discriminator``, ``vqgan_encoder``);
    ``backbone_weights_path``: the local torchvision weights file of ``vgg16`` /
    ``inception_v3`` (empty: ``weights_path``). ``backbone_layers``: MobileNetV2's feature blocks
    as comma-separated indices (empty: 3,6, strides 4 and 8; e.g. 3,6,10 adds a stride-16 map:
    bench/README.md, backbone layers). Nothing is ever downloaded. ``image_size``:
    the working resolution (0 = the preset's; e.g. 640 keeps DeepPCB's native size, where
    defects a few px wide would vanish at 256). ``downsampling``: the VQGAN's factor f, input px
    per code (0 = the preset's, demo 8; 4 for a finer code map, see
    :func:`~vqganodip_pipeline.model.config.with_downsampling`). ``engine``: what runs the
    trained VQGAN's reconstructions (``torch``; ``onnxruntime`` or ``openvino``, CPU fp32, a
    256 px reconstruction in 0.12 s against 0.23 s here; ``openvino-bf16``, f32 code map and
    bf16 decoder on a CPU with bf16 units, 0.044 s: model/engines.py); every
    reconstruction that feeds metrics (normal variation, classifier rows, new batches, the
    report's latency) uses it. Training is PyTorch.
    """

    preset: str = "demo"
    image_size: int = 0  # working resolution in px; 0 = the preset's
    downsampling: int = 0  # the VQGAN's f (px per code); 0 = the preset's
    engine: str = "torch"  # the reconstruction's inference engine, one of model.engines.ENGINES
    device: str = "auto"
    weights_path: str = ""
    backbone: str = "auto"
    backbone_weights_path: str = ""
    backbone_layers: str = ""  # MobileNetV2 blocks, e.g. "3,6,10"; empty = 3,6
    work_dir: str = ".vqganodip_work"

    def get_preset(self) -> Preset:
        preset = get_preset(self.preset)
        return preset.with_image_size(self.image_size) if self.image_size else preset

    def vqgan_configs(self, steps: int = 0, seed: int = 0) -> tuple[VQGANConfig, TrainConfig]:
        preset = self.get_preset()
        config, train = vqgan_preset(preset.name)
        config = replace(config, resolution=preset.image_size)
        if self.downsampling:
            config = with_downsampling(config, self.downsampling)
            check_compatible(config, train)
        weights = (
            self.weights_path if self.weights_path and Path(self.weights_path).is_file() else None
        )
        train = replace(
            train,
            device=self.device,
            perceptual_weights_path=weights,
            steps=steps or train.steps,
            seed=seed,
        )
        return config, train

    def inference_model(self, model: VQGAN) -> VQGAN | CompiledVQGAN:
        """``model`` as the reconstructions run it: itself, or compiled for :attr:`engine`."""
        return compile_vqgan(model, self.engine)

    def localize_config(self) -> LocalizeConfig:
        return self.get_preset().localize

    def weights(self) -> str | None:
        return self.weights_path or None

    def backbone_weights(self) -> str | None:
        return self.backbone_weights_path or self.weights()

    def backbone_layer_indices(self) -> tuple[int, ...] | None:
        """:attr:`backbone_layers` as block indices (None when empty); a value that is not a
        comma-separated list of distinct MobileNetV2 blocks (0..18) is a ``ValueError``."""
        text = self.backbone_layers.strip()
        if not text:
            return None
        try:
            layers = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise ValueError(
                f"backbone_layers {self.backbone_layers!r}: expected comma-separated block "
                "indices such as 3,6,10"
            ) from None
        if len(set(layers)) != len(layers) or not all(0 <= i < NUM_FEATURE_BLOCKS for i in layers):
            raise ValueError(
                f"backbone_layers {self.backbone_layers!r}: MobileNetV2's blocks are "
                f"0..{NUM_FEATURE_BLOCKS - 1}, each named once"
            )
        return layers

    def fingerprint_fields(self) -> dict[str, str]:
        """What of these settings changes results: the preset's values (its repr), the working
        size, the VQGAN's downsampling factor where it differs from the preset's, MobileNetV2's
        blocks where they are not 3,6 and the inference engine where it is not torch (so
        settings written before these options existed keep their fingerprint), the backbone
        and the SHA-256
        of each weights file. Not the device (results are meant to agree across devices within
        tolerance) nor the work folder."""
        preset = self.get_preset()
        fields = {
            "preset": preset.name,
            "preset_values": hash_strings([repr(preset)])[:12],
            "image_size": str(preset.image_size),
            "backbone": self.backbone,
            "weights_sha256": file_digest(self.weights_path),
            "backbone_weights_sha256": file_digest(self.backbone_weights_path),
        }
        f = self.vqgan_configs()[0].f
        if f != vqgan_preset(preset.name)[0].f:
            fields["downsampling"] = str(f)
        layers = self.backbone_layer_indices()
        if layers is not None and layers != DEFAULT_MOBILENET_LAYERS:
            fields["backbone_layers"] = ",".join(map(str, layers))
        check_engine(self.engine)
        if self.engine != "torch":
            # another runtime's rounding may flip a near-tie code: its results are its own
            fields["engine"] = self.engine
        return fields

    def fingerprint(self) -> str:
        """12 hex characters of :meth:`fingerprint_fields`, folded into the code versions."""
        return hash_strings(f"{k}={v}" for k, v in sorted(self.fingerprint_fields().items()))[:12]

    def training_dir(self, key: str) -> Path:
        path = Path(self.work_dir).resolve() / "vqgan" / key
        path.mkdir(parents=True, exist_ok=True)
        return path


def describe(settings: PipelineSettings, storage: str, inbox: str) -> list[str]:
    """The settings a run uses, one per line: what ``vqganodip settings`` (and so ``make ui``)
    and the demo print, so a person can see that the UI opens what the demo wrote."""
    fields = {
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", "(unset)"),
        "storage": storage,
        "inbox": inbox,
        "work": settings.work_dir,
        **settings.fingerprint_fields(),
        "settings fingerprint": settings.fingerprint(),
    }
    return [f"{key:>24}: {value}" for key, value in fields.items()]


def file_digest(path: str) -> str:
    """SHA-256 (16 hex characters) of the file at ``path``; ``none`` for no path, ``missing``
    when it does not exist (the documented fallback then applies)."""
    if not path:
        return "none"
    target = Path(path)
    if not target.is_file():
        return "missing"
    stat = target.stat()
    return _file_digest(str(target.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key: a replaced file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def settings_from_env(preset: str | None = None) -> PipelineSettings:
    return PipelineSettings(
        preset=preset or os.environ.get("VQGANODIP_PRESET", "demo"),
        image_size=int(os.environ.get("VQGANODIP_IMAGE_SIZE", "0") or 0),
        downsampling=int(os.environ.get("VQGANODIP_DOWNSAMPLING", "0") or 0),
        engine=os.environ.get("VQGANODIP_ENGINE", "torch") or "torch",
        device=os.environ.get("VQGANODIP_DEVICE", "auto"),
        weights_path=os.environ.get("VQGANODIP_WEIGHTS", ""),
        backbone=os.environ.get("VQGANODIP_BACKBONE", "auto"),
        backbone_weights_path=os.environ.get("VQGANODIP_BACKBONE_WEIGHTS", ""),
        backbone_layers=os.environ.get("VQGANODIP_BACKBONE_LAYERS", ""),
        work_dir=os.environ.get("VQGANODIP_WORK", ".vqganodip_work"),
    )
