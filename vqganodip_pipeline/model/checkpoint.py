"""VQGAN checkpoint format: one ``torch.save`` file, loadable with ``weights_only=True``.

Contents (all plain containers, tensors and numbers):

* ``model`` / ``discriminator``: state dicts (discriminator may be absent);
* ``config`` / ``train_config``: :class:`VQGANConfig` / :class:`TrainConfig` as dicts;
* ``history``: ``{"train": [...], "eval": [...], "restarts": [...]}`` lists of per-step and
  per-evaluation records (losses, codebook usage, perplexity, images/s, validation L1 / PSNR);
* ``step``, ``best_step``; ``data_hash``: the caller's training-data manifest hash;
* ``code_version``: package version + hash of the training code's import closure;
* ``perceptual``: which perceptual backbone was used ("mobilenet_v2:sha256=..." or
  "fallback:...");
* ``optimizers`` / ``trainer_state``: what resuming needs (Adam states, RNG states, sampler
  position, codebook-usage window, early-stopping state).

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over
the target, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqganodip_pipeline import __version__
from vqganodip_pipeline.model.config import TrainConfig, VQGANConfig
from vqganodip_pipeline.model.discriminator import NLayerDiscriminator
from vqganodip_pipeline.model.vqgan import VQGAN, build_discriminator
from vqganodip_pipeline.versioning import closure_hash

FORMAT_VERSION = 1
# the modules whose code makes a checkpoint: training and everything it imports, transitively
CHECKPOINT_MODULES = ("vqganodip_pipeline.model.train", "vqganodip_pipeline.model.checkpoint")


def code_version() -> dict[str, str]:
    """The package version and the hash of the sources of :data:`CHECKPOINT_MODULES` and all
    they import (``versioning.closure_hash``: the same closure the asset code versions use)."""
    return {"package_version": __version__, "code_closure": closure_hash(CHECKPOINT_MODULES)}


@dataclass
class VQGANCheckpoint:
    """A loaded checkpoint; ``model`` / ``discriminator`` are built, loaded and in eval mode."""

    path: Path
    model: VQGAN
    discriminator: NLayerDiscriminator | None
    config: VQGANConfig
    train_config: TrainConfig | None
    step: int
    best_step: int | None
    history: dict[str, list[dict[str, Any]]]
    data_hash: str
    code_version: dict[str, str]
    perceptual: str
    optimizers: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    *,
    model: VQGAN,
    train_config: TrainConfig | None = None,
    discriminator: nn.Module | None = None,
    step: int = 0,
    best_step: int | None = None,
    history: dict[str, list[dict[str, Any]]] | None = None,
    data_hash: str = "",
    perceptual: str = "",
    optimizers: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (its ``config`` is stored with it) atomically to ``path``."""
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "discriminator": (
            None
            if discriminator is None
            else {k: v.detach().cpu() for k, v in discriminator.state_dict().items()}
        ),
        "config": model.config.to_dict(),
        "train_config": None if train_config is None else train_config.to_dict(),
        "step": int(step),
        "best_step": None if best_step is None else int(best_step),
        "history": history or {"train": [], "eval": [], "restarts": []},
        "data_hash": data_hash,
        "code_version": code_version(),
        "perceptual": perceptual,
        "optimizers": optimizers,
        "trainer_state": trainer_state,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable ``field: a != b`` lines for the keys whose values differ."""
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k, '<absent>')!r} != {b.get(k, '<absent>')!r}"
        for k in keys
        if a.get(k) != b.get(k)
    ]


def read_checkpoint_payload(path: str | Path, inference_only: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict of ``path`` (weights-only load). ``inference_only`` drops the
    optimizer and trainer states, which only resuming needs (the file keeps them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQGAN checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable VQGAN checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a VQGAN checkpoint of format {FORMAT_VERSION}")
    if inference_only:
        payload = {**payload, "optimizers": None, "trainer_state": None}
    return payload


def load_checkpoint(
    path: str | Path,
    expected_config: VQGANConfig | None = None,
    map_location: str | torch.device = "cpu",
) -> VQGANCheckpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    With ``expected_config``, a checkpoint whose architecture differs raises ``ValueError``
    naming each differing field (checkpoint value != expected value).
    """
    payload = read_checkpoint_payload(path)
    return checkpoint_from_payload(payload, expected_config, map_location, source=str(path))


def checkpoint_from_payload(
    payload: dict[str, Any],
    expected_config: VQGANConfig | None = None,
    map_location: str | torch.device = "cpu",
    source: str = "checkpoint",
) -> VQGANCheckpoint:
    """Build the modules of a checkpoint dict (as stored by the Dagster checkpoint IO manager
    or read by :func:`read_checkpoint_payload`); ``source`` names it in error messages."""
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source} is not a VQGAN checkpoint of format {FORMAT_VERSION}")
    config = VQGANConfig.from_dict(payload["config"])
    if expected_config is not None and expected_config != config:
        diffs = config_differences(config.to_dict(), expected_config.to_dict())
        raise ValueError(
            f"checkpoint {source} was trained with a different VQGANConfig "
            f"(checkpoint != expected): {'; '.join(diffs)}"
        )
    # Building modules runs their random init; fork so loading leaves the global RNG alone.
    with torch.random.fork_rng(devices=[]):
        model = VQGAN(config)
        discriminator = None
        if payload.get("discriminator") is not None:
            discriminator = build_discriminator(config)
    model.load_state_dict(payload["model"], strict=True)
    model.to(map_location).eval()
    if discriminator is not None:
        discriminator.load_state_dict(payload["discriminator"], strict=True)
        discriminator.to(map_location).eval()
    train_config = payload.get("train_config")
    return VQGANCheckpoint(
        path=Path(source),
        model=model,
        discriminator=discriminator,
        config=config,
        train_config=None if train_config is None else TrainConfig.from_dict(train_config),
        step=int(payload["step"]),
        best_step=payload.get("best_step"),
        history=payload.get("history") or {"train": [], "eval": [], "restarts": []},
        data_hash=payload.get("data_hash", ""),
        code_version=payload.get("code_version", {}),
        perceptual=payload.get("perceptual", ""),
        optimizers=payload.get("optimizers"),
        trainer_state=payload.get("trainer_state"),
        extra=payload.get("extra") or {},
    )
