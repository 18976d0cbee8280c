"""VQGAN reconstruction model (library code, no Dagster).

- :mod:`.config`: ``VQGANConfig``, ``TrainConfig``, ``vqgan_preset("tiny" | "demo" | "paper")``
- :mod:`.modules`, :mod:`.quantizer`, :mod:`.discriminator`, :mod:`.vqgan`: the networks
- :mod:`.losses`, :mod:`.perceptual`: training objective
- :mod:`.train`: ``train_vqgan`` (deterministic, checkpointed, resumable)
- :mod:`.checkpoint`: ``save_checkpoint`` / ``load_checkpoint``
- :mod:`.reconstruct`: ``reconstruct`` (batched, with per-image side outputs), ``reconstruct_image``
- :mod:`.tensors`: uint8 NHWC <-> float NCHW in [-1, 1]
"""

from vqganodip_pipeline.model.checkpoint import VQGANCheckpoint, load_checkpoint, save_checkpoint
from vqganodip_pipeline.model.config import TrainConfig, VQGANConfig, vqgan_preset
from vqganodip_pipeline.model.reconstruct import Reconstruction, reconstruct, reconstruct_image
from vqganodip_pipeline.model.train import TrainResult, train_vqgan
from vqganodip_pipeline.model.vqgan import VQGAN, build_discriminator, build_vqgan

__all__ = [
    "VQGAN",
    "Reconstruction",
    "TrainConfig",
    "TrainResult",
    "VQGANCheckpoint",
    "VQGANConfig",
    "build_discriminator",
    "build_vqgan",
    "load_checkpoint",
    "reconstruct",
    "reconstruct_image",
    "save_checkpoint",
    "train_vqgan",
    "vqgan_preset",
]
