"""Training loop of the VQGAN on normal images (taming-transformers' VQLPIPSWithDiscriminator
objective, one autoencoder step then one discriminator step per batch).

Generator / autoencoder loss per step:

    L = w_pix * L_pix(x, x_hat) + w_per * L_per(x, x_hat) + w_cb * L_VQ + lambda * L_GAN

with lambda the adaptive weight (:func:`.losses.adaptive_weight`) once ``step >= disc_start``
(0 before, and D is not trained before). Deterministic given ``TrainConfig.seed``: data order
and crop offsets come from a NumPy generator, model init / dropout / codebook restarts from
seeded torch generators; all of their states, the optimisers and the codebook-usage window are
checkpointed, so a run interrupted and resumed from its last checkpoint ends where an
uninterrupted run ends. The global torch RNG is restored on return.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqganodip_pipeline.model.checkpoint import (
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from vqganodip_pipeline.model.config import TrainConfig, VQGANConfig, check_compatible
from vqganodip_pipeline.model.discriminator import NLayerDiscriminator
from vqganodip_pipeline.model.distributed import all_sum, broadcast_module, rank_and_world, wrap
from vqganodip_pipeline.model.losses import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    pixel_loss,
)
from vqganodip_pipeline.model.perceptual import PerceptualLoss, build_perceptual
from vqganodip_pipeline.model.quantizer import kmeans_init, restart_dead_codes
from vqganodip_pipeline.model.reconstruct import iter_reconstructions
from vqganodip_pipeline.model.runtime import autocast, resolve_device, resolve_precision
from vqganodip_pipeline.model.tensors import images_to_tensor
from vqganodip_pipeline.model.vqgan import VQGAN, build_discriminator, build_vqgan

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# TrainConfig fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "eval_every", "log_every", "early_stopping_patience",
     "min_delta", "device", "num_threads"}
)  # fmt: skip

_LOSS_KEYS = (
    "loss",
    "rec_loss",
    "perceptual_loss",
    "codebook_loss",
    "g_loss",
    "d_weight",
    "d_loss",
)

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """Outcome of :func:`train_vqgan`.

    model / discriminator: on the training device, eval mode; ``model`` carries the weights of
    the best validation evaluation when validation images were given (``best_step``), else the
    final weights. step: steps completed; stopped_early: early stopping fired;
    images_per_s: mean training throughput of this call; perceptual: backbone record;
    history: ``{"train", "eval", "restarts"}`` record lists (also in the checkpoints).
    """

    model: VQGAN
    discriminator: NLayerDiscriminator
    config: VQGANConfig
    train_config: TrainConfig
    history: dict[str, list[dict[str, Any]]]
    step: int
    best_step: int | None
    best_metric: float | None
    stopped_early: bool
    images_per_s: float
    perceptual: str
    data_hash: str
    resumed_from: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None


class _BatchSampler:
    """Endless epochs of seeded permutations; per-sample random crop offsets."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n = n
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(n)
        self.pos = 0
        self.epoch = 0

    def next_indices(self) -> np.ndarray:
        out = np.empty(self.batch_size, dtype=np.int64)
        for i in range(self.batch_size):
            if self.pos == self.n:
                self.perm = self.rng.permutation(self.n)
                self.pos = 0
                self.epoch += 1
            out[i] = self.perm[self.pos]
            self.pos += 1
        return out

    def offsets(self, limit_h: int, limit_w: int, crop: int) -> np.ndarray:
        """Top-left corners in [0, limit]. Drawn from [-crop / 2, limit + crop / 2] and clamped:
        uniform offsets in [0, limit] would cover a pixel p < crop px from the border only
        (p + 1) / crop as often as the interior (the board corners, e.g. fiducials, would
        hardly be seen); clamping brings border coverage to 0.5-1.5x the interior's."""
        half = crop // 2
        ys = self.rng.integers(-half, limit_h + half + 1, size=self.batch_size)
        xs = self.rng.integers(-half, limit_w + half + 1, size=self.batch_size)
        return np.stack([np.clip(ys, 0, limit_h), np.clip(xs, 0, limit_w)], axis=1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "bit_generator": self.rng.bit_generator.state,
            "perm": [int(i) for i in self.perm],
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.perm = np.asarray(state["perm"], dtype=np.int64)
        self.pos = int(state["pos"])
        self.epoch = int(state["epoch"])


def _check_images(name: str, images: np.ndarray, f: int, crop: int | None) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 numpy array (N, H, W, 3)")
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"{name} must have shape (N >= 1, H, W, 3), got {images.shape}")
    h, w = images.shape[1:3]
    if crop is None and (h % f or w % f):
        raise ValueError(
            f"{name} size {(h, w)} is not divisible by f = {f}; set TrainConfig.crop_size or "
            "resize the images"
        )
    if crop is not None and (crop > h or crop > w):
        raise ValueError(f"TrainConfig.crop_size={crop} exceeds the {name} size {(h, w)}")


def images_hash(*arrays: np.ndarray | None) -> str:
    """sha256 of image arrays' shapes and bytes (the default ``data_hash``)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _psnr(mse: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


def evaluate_reconstruction(
    model: VQGAN,
    images: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    channels_last: bool = False,
) -> dict[str, float]:
    """Validation metrics on uint8 images: mean |x - x_hat| and PSNR (pixels in [0, 1]), and
    the codebook usage (fraction of codes used over all images) and perplexity."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(model.config.n_embed, dtype=torch.float64)
    l1: list[np.ndarray] = []
    mse: list[np.ndarray] = []
    try:
        for out in iter_reconstructions(
            model, images, batch_size=batch_size, device=device, precision=precision,
            channels_last=channels_last,
        ):  # fmt: skip
            diff = (out.images.astype(np.float32) - out.x_hat_images.astype(np.float32)) / 255.0
            l1.append(np.abs(diff).mean(axis=(1, 2, 3), dtype=np.float64))
            mse.append(np.mean(diff**2, axis=(1, 2, 3), dtype=np.float64))
            counts += torch.bincount(
                out.info.indices.flatten().cpu(), minlength=model.config.n_embed
            ).double()
    finally:
        model.train(was_training)
    probs = counts / counts.sum()
    return {
        "val_l1": float(np.concatenate(l1).mean()),
        "val_psnr": float(_psnr(np.concatenate(mse)).mean()),
        "val_codebook_usage": float((counts > 0).sum()) / model.config.n_embed,
        "val_perplexity": float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())),
    }


class _Trainer:
    """State of one training run (kept in one place so that it can be checkpointed)."""

    def __init__(
        self,
        train_images: np.ndarray,
        val_images: np.ndarray | None,
        config: VQGANConfig,
        tc: TrainConfig,
        checkpoint_dir: Path | None,
        data_hash: str,
        progress: ProgressFn | None,
    ):
        self.train_images = train_images
        self.val_images = val_images
        self.config = config
        self.tc = tc
        self.checkpoint_dir = checkpoint_dir
        self.data_hash = data_hash
        self.progress = progress
        self.device = resolve_device(tc.device)
        self.precision = resolve_precision(tc.precision, self.device)
        self.channels_last = tc.channels_last and self.device.type != "mps"
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

        self.model = build_vqgan(config, seed=tc.seed).to(self.device)
        self.discriminator = build_discriminator(config, seed=tc.seed + 1).to(self.device)
        self.perceptual: PerceptualLoss | None = None
        self.perceptual_record = "none"
        if tc.perceptual_weight > 0:
            self.perceptual = build_perceptual(
                tc.perceptual_weights_path, tc.perceptual_layers, seed=tc.seed
            ).to(self.device)
            self.perceptual_record = self.perceptual.record
        for module in (self.model, self.discriminator, self.perceptual):
            if module is not None:
                module.to(memory_format=self.memory_format)
        # Under torchrun (model/distributed.py): DDP averages the gradients over the ranks; each
        # rank trains on its share of the global batch. One process: the modules themselves.
        self.rank, self.world = rank_and_world()
        self.ddp_model, self.ddp_discriminator = wrap(self.model), wrap(self.discriminator)
        ae_params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_ae = torch.optim.Adam(ae_params, lr=tc.lr, betas=tc.betas, foreach=True)
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=tc.disc_lr or tc.lr, betas=tc.betas, foreach=True
        )
        use_scaler = self.precision == "fp16" and self.device.type == "cuda"
        self.scaler_ae = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_scaler)

        self.sampler = _BatchSampler(len(train_images), tc.batch_size, tc.seed)
        self.codebook_gen = torch.Generator().manual_seed(tc.seed + 2)
        self.step = 0
        self.kmeans_done = False
        self.restart_counts = torch.zeros(config.n_embed, dtype=torch.long)
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "restarts": []}
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.best_state: dict[str, dict[str, torch.Tensor]] | None = None
        self._window: dict[str, float] = {}
        self._window_counts = torch.zeros(config.n_embed, dtype=torch.long)

    # ------------------------------------------------------------------ data
    def _batch(self) -> torch.Tensor:
        idx = self.sampler.next_indices()
        crop = self.tc.crop_size
        if crop is None:
            batch = self.train_images[idx]
        else:
            h, w = self.train_images.shape[1:3]
            offsets = self.sampler.offsets(h - crop, w - crop, crop)
            batch = np.stack(
                [
                    self.train_images[i, y : y + crop, x : x + crop]
                    for i, (y, x) in zip(idx, offsets, strict=True)
                ]
            )
        batch = batch[self.rank :: self.world]  # this rank's share (all of it in one process)
        return images_to_tensor(batch, self.device).contiguous(memory_format=self.memory_format)

    # ------------------------------------------------------------------ one step
    def _train_step(self, x: torch.Tensor) -> dict[str, Any]:
        tc = self.tc
        model, disc = self.model, self.discriminator
        model.train()
        disc.train()
        disc_active = self.step >= tc.disc_start
        with autocast(self.device, self.precision):
            x_hat, q_loss, info = self.ddp_model(x)
        x_hat = x_hat.float()
        rec = pixel_loss(x, x_hat, tc.pixel_loss)
        nll = tc.pixel_weight * rec
        p_loss = torch.zeros((), device=self.device)
        if self.perceptual is not None:
            with autocast(self.device, self.precision):
                p_loss = self.perceptual(x, x_hat).mean()
            nll = nll + tc.perceptual_weight * p_loss
        g_loss = torch.zeros((), device=self.device)
        d_weight = torch.zeros((), device=self.device)
        if disc_active:
            disc.requires_grad_(False)
            with autocast(self.device, self.precision):
                logits_fake = disc(x_hat.contiguous(memory_format=self.memory_format))
            g_loss = generator_loss(logits_fake.float(), tc.gan_loss)
            d_weight = adaptive_weight(nll, g_loss, model.last_layer, tc.disc_weight)
            disc.requires_grad_(True)
        loss = nll + d_weight * g_loss + tc.codebook_weight * q_loss
        self.opt_ae.zero_grad(set_to_none=True)
        self.scaler_ae.scale(loss).backward()
        self.scaler_ae.step(self.opt_ae)
        self.scaler_ae.update()

        d_loss = torch.zeros((), device=self.device)
        logits_real_mean: float | None = None
        logits_fake_mean: float | None = None
        if disc_active:
            with autocast(self.device, self.precision):
                logits_real = self.ddp_discriminator(x.detach())
                logits_fake = self.ddp_discriminator(
                    x_hat.detach().contiguous(memory_format=self.memory_format)
                )
            d_loss = discriminator_loss(logits_real.float(), logits_fake.float(), tc.gan_loss)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_loss).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            logits_real_mean = float(logits_real.detach().float().mean())
            logits_fake_mean = float(logits_fake.detach().float().mean())
        return {
            "info": info,
            "loss": float(loss.detach()),
            "rec_loss": float(rec.detach()),
            "perceptual_loss": float(p_loss.detach()),
            "codebook_loss": float(q_loss.detach()),
            "g_loss": float(g_loss.detach()),
            "d_weight": float(d_weight),
            "d_loss": float(d_loss.detach()),
            "logits_real": logits_real_mean,
            "logits_fake": logits_fake_mean,
            "disc_active": disc_active,
        }

    # ------------------------------------------------------------------ remedies
    def _maybe_kmeans(self, x: torch.Tensor) -> None:
        if self.kmeans_done or "kmeans" not in self.tc.codebook_remedy:
            self.kmeans_done = True
            return
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.precision):
            z_e = self.model.encode_latent(x)
        error = kmeans_init(self.model.quantize, z_e.float(), generator=self.codebook_gen)
        broadcast_module(self.model.quantize)  # every rank starts from rank 0's codes
        self.kmeans_done = True
        self._emit({"event": "kmeans_init", "step": self.step, "quantization_mse": error})

    def _maybe_restart(self, info: Any) -> None:
        self.restart_counts += torch.bincount(
            info.indices.flatten().cpu(), minlength=self.config.n_embed
        )
        if "restart" not in self.tc.codebook_remedy or self.step % self.tc.restart_every:
            return
        dead = all_sum(self.restart_counts) == 0  # unused on every rank
        n = restart_dead_codes(self.model.quantize, info.z_e, dead, generator=self.codebook_gen)
        broadcast_module(self.model.quantize)  # rank 0's new codes everywhere
        self.restart_counts.zero_()
        record = {"step": self.step, "n_restarted": n, "n_embed": self.config.n_embed}
        self.history["restarts"].append(record)
        if n:
            self._emit({"event": "codebook_restart", **record})

    # ------------------------------------------------------------------ bookkeeping
    def _emit(self, record: dict[str, Any]) -> None:
        if self.progress is not None and self.rank == 0:
            self.progress(dict(record))

    def _accumulate(self, out: dict[str, Any], seconds: float) -> None:
        w = self._window
        for key in _LOSS_KEYS:
            w[key] = w.get(key, 0.0) + out[key]
        w["n"] = w.get("n", 0.0) + 1
        w["seconds"] = w.get("seconds", 0.0) + seconds
        w["images"] = w.get("images", 0.0) + self.tc.batch_size
        self._window_counts += torch.bincount(
            out["info"].indices.flatten().cpu(), minlength=self.config.n_embed
        )

    def _log(self, out: dict[str, Any]) -> None:
        w, n = self._window, self._window.get("n", 0.0)
        if not n:
            return
        counts = self._window_counts.double()
        probs = counts / counts.sum()
        record: dict[str, Any] = {"step": self.step}
        for key in _LOSS_KEYS:
            record[key] = w[key] / n
        record.update(
            codebook_usage=float((counts > 0).sum()) / self.config.n_embed,
            perplexity=float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum())),
            images_per_s=w["images"] / max(w["seconds"], 1e-9),
            disc_active=out["disc_active"],
            logits_real=out["logits_real"],
            logits_fake=out["logits_fake"],
        )
        self.history["train"].append(record)
        self._window = {}
        self._window_counts.zero_()
        self._emit({"event": "train", **record})

    def _evaluate(self) -> None:
        assert self.val_images is not None
        metrics = evaluate_reconstruction(
            self.model, self.val_images, batch_size=self.tc.batch_size, device=self.device,
            precision=self.precision, channels_last=self.channels_last,
        )  # fmt: skip
        record = {"step": self.step, **metrics}
        self.history["eval"].append(record)
        if self.tc.early_stopping_metric == "l1":
            value, sign = metrics["val_l1"], -1.0
        else:
            value, sign = metrics["val_psnr"], 1.0
        improved = self.best_metric is None or sign * (value - self.best_metric) > self.tc.min_delta
        if improved:
            self.best_metric, self.best_step, self.bad_evals = value, self.step, 0
            self.best_state = {
                "model": copy.deepcopy(self.model.state_dict()),
                "discriminator": copy.deepcopy(self.discriminator.state_dict()),
            }
            if self.checkpoint_dir is not None and self.rank == 0:
                self._save(self.checkpoint_dir / BEST_CHECKPOINT, with_state=False)
        else:
            self.bad_evals += 1
            patience = self.tc.early_stopping_patience
            self.stopped_early = patience is not None and self.bad_evals >= patience
        self._emit({"event": "eval", **record, "best_step": self.best_step, "improved": improved})

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch_rng": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
            "codebook_generator": self.codebook_gen.get_state(),
            "restart_counts": self.restart_counts.clone(),
            "kmeans_done": self.kmeans_done,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _save(self, path: Path, with_state: bool = True) -> None:
        save_checkpoint(
            path,
            model=self.model,
            train_config=self.tc,
            discriminator=self.discriminator,
            step=self.step,
            best_step=self.best_step,
            history=self.history,
            data_hash=self.data_hash,
            perceptual=self.perceptual_record,
            optimizers=(
                {
                    "ae": self.opt_ae.state_dict(),
                    "disc": self.opt_d.state_dict(),
                    "scaler_ae": self.scaler_ae.state_dict(),
                    "scaler_d": self.scaler_d.state_dict(),
                }
                if with_state
                else None
            ),
            trainer_state=self._trainer_state() if with_state else None,
        )

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.config != self.config:
            diffs = config_differences(ckpt.config.to_dict(), self.config.to_dict())
            raise ValueError(
                f"cannot resume from {path}: VQGANConfig differs (checkpoint != requested): "
                + "; ".join(diffs)
            )
        if ckpt.train_config is not None:
            diffs = [
                d
                for d in config_differences(ckpt.train_config.to_dict(), self.tc.to_dict())
                if d.split(":")[0] not in RESUMABLE_CHANGES
            ]
            if diffs:
                raise ValueError(
                    f"cannot resume from {path}: TrainConfig differs (checkpoint != requested): "
                    + "; ".join(diffs)
                )
        if ckpt.data_hash != self.data_hash:
            raise ValueError(
                f"cannot resume from {path}: it was trained on data {ckpt.data_hash[:16]}..., "
                f"the given data hash is {self.data_hash[:16]}..."
            )
        if ckpt.trainer_state is None or ckpt.optimizers is None:
            raise ValueError(f"cannot resume from {path}: it holds no optimizer / trainer state")
        self.model.load_state_dict(ckpt.model.state_dict())
        self.discriminator.load_state_dict(ckpt.discriminator.state_dict())  # type: ignore[union-attr]
        self.opt_ae.load_state_dict(ckpt.optimizers["ae"])
        self.opt_d.load_state_dict(ckpt.optimizers["disc"])
        self.scaler_ae.load_state_dict(ckpt.optimizers["scaler_ae"])
        self.scaler_d.load_state_dict(ckpt.optimizers["scaler_d"])
        state = ckpt.trainer_state
        self.sampler.load_state_dict(state["sampler"])
        self.codebook_gen.set_state(state["codebook_generator"].cpu())
        self.restart_counts = state["restart_counts"].cpu().clone()
        self.kmeans_done = bool(state["kmeans_done"])
        self.best_metric = state["best_metric"]
        self.best_step = state["best_step"]
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        self.history = ckpt.history
        self.step = ckpt.step
        best_path = path.parent / BEST_CHECKPOINT
        if self.best_step is not None and best_path.is_file():
            best = load_checkpoint(best_path, expected_config=self.config, map_location=self.device)
            self.best_state = {
                "model": best.model.state_dict(),
                "discriminator": best.discriminator.state_dict(),  # type: ignore[union-attr]
            }
        # Last, so that nothing above (module construction in load_checkpoint) draws from it.
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self._emit({"event": "resume", "step": self.step, "path": str(path)})

    # ------------------------------------------------------------------ loop
    def run(self) -> float:
        tc = self.tc
        total_images, total_seconds = 0, 0.0
        last_out: dict[str, Any] | None = None
        while self.step < tc.steps and not self.stopped_early:
            start = time.perf_counter()
            x = self._batch()
            self._maybe_kmeans(x)
            out = self._train_step(x)
            self.step += 1
            self._maybe_restart(out["info"])
            seconds = time.perf_counter() - start
            total_images += tc.batch_size
            total_seconds += seconds
            self._accumulate(out, seconds)
            last_out = out
            final = self.step == tc.steps
            if self.step % tc.log_every == 0 or final:
                self._log(out)
            if self.val_images is not None and (self.step % tc.eval_every == 0 or final):
                self._evaluate()
            if (
                self.checkpoint_dir is not None
                and self.rank == 0
                and (self.step % tc.checkpoint_every == 0 or final or self.stopped_early)
            ):
                self._save(self.checkpoint_dir / LAST_CHECKPOINT)
                self._emit({"event": "checkpoint", "step": self.step})
        if last_out is not None and self._window.get("n"):
            self._log(last_out)
        return total_images / total_seconds if total_seconds > 0 else float("nan")


def train_vqgan(
    train_images: np.ndarray,
    val_images: np.ndarray | None,
    config: VQGANConfig,
    train_config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    data_hash: str = "",
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a VQGAN on normal images.

    train_images / val_images: uint8 (N, H, W, 3) RGB (validation: held-out normal images,
    whole images, evaluated every ``eval_every`` steps; None disables validation and early
    stopping). checkpoint_dir: where ``last.pt`` (every ``checkpoint_every`` steps and at the
    end) and ``best.pt`` (best validation metric) go; with ``resume`` an existing ``last.pt``
    is continued (its configs and data hash must match; ``steps`` may grow). data_hash: the
    caller's manifest hash (default: a sha256 of the arrays). progress: called with dicts
    ``{"event": "train" | "eval" | "checkpoint" | "resume" | "codebook_restart" | "kmeans_init",
    "step": ..., ...}`` (train records: mean losses over the log window, codebook usage,
    perplexity, images/s).
    """
    check_compatible(config, train_config)
    _check_images("train_images", train_images, config.f, train_config.crop_size)
    if val_images is not None:
        _check_images("val_images", val_images, 1, None)
    data_hash = data_hash or images_hash(train_images, val_images)
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    devices = [torch.device(resolve_device(train_config.device))]
    cuda_devices = [d for d in devices if d.type == "cuda"]
    threads = torch.get_num_threads()
    if train_config.num_threads is not None:
        torch.set_num_threads(train_config.num_threads)
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(train_config.seed + 3)
            trainer = _Trainer(
                train_images, val_images, config, train_config, directory, data_hash, progress
            )
            resumed_from = None
            if directory is not None and resume and (directory / LAST_CHECKPOINT).is_file():
                trainer.resume(directory / LAST_CHECKPOINT)
                resumed_from = trainer.step
            images_per_s = trainer.run()
    finally:
        torch.set_num_threads(threads)
    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state["model"])
        trainer.discriminator.load_state_dict(trainer.best_state["discriminator"])
    trainer.model.eval()
    trainer.discriminator.eval()
    return TrainResult(
        model=trainer.model,
        discriminator=trainer.discriminator,
        config=config,
        train_config=train_config,
        history=trainer.history,
        step=trainer.step,
        best_step=trainer.best_step,
        best_metric=trainer.best_metric,
        stopped_early=trainer.stopped_early,
        images_per_s=images_per_s if not math.isnan(images_per_s) else 0.0,
        perceptual=trainer.perceptual_record,
        data_hash=data_hash,
        resumed_from=resumed_from,
        last_checkpoint=None if directory is None else directory / LAST_CHECKPOINT,
        best_checkpoint=(
            directory / BEST_CHECKPOINT
            if directory is not None and (directory / BEST_CHECKPOINT).is_file()
            else None
        ),
    )
