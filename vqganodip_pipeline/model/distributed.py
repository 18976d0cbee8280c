"""VQGAN training under ``torchrun``: PyTorch's DistributedDataParallel, nothing home-made.

Run it on one node with N processes (one per GPU; on CPU the gloo backend)::

    torchrun --nproc-per-node 2 -m vqganodip_pipeline.model.distributed \\
        --data train.npz --preset demo --out runs/vqgan

``--data`` is an ``.npz`` with ``train`` (and optionally ``val``) uint8 (N, H, W, 3) arrays.
Every rank draws the same global batch of ``batch_size`` images (the same seeded sampler) and
trains on its ``1 / world_size`` share of it; DDP averages the gradients of the autoencoder and
of the discriminator, so one step sees what a single process sees with the whole batch, and the
loss curve keeps its shape. Codebook restarts decide on the codebook usage summed over the
ranks and rank 0's new codes are broadcast. Rank 0 alone logs, evaluates into the history and
writes checkpoints; the result, ``<out>/vqgan.pt``, is an ordinary checkpoint that
:func:`~vqganodip_pipeline.model.checkpoint.load_checkpoint` loads in a single process, and
``--resume`` continues an interrupted run from ``<out>/work/last.pt`` as the single-process
trainer does.

The helpers below are no-ops in a process that did not initialise ``torch.distributed``, so
the single-process trainer (``model/train.py``) calls them unconditionally.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size; ``(0, 1)`` outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel when running distributed, else itself."""
    _, world = rank_and_world()
    if world == 1:
        return module
    device = next(module.parameters()).device
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks (a copy; ``tensor`` itself outside distributed)."""
    _, world = rank_and_world()
    if world == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def broadcast_module(module: nn.Module) -> None:
    """Overwrite ``module``'s parameters and buffers with rank 0's (after a change that ranks
    made from their own data: codebook restarts, k-means init)."""
    _, world = rank_and_world()
    if world == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def main(argv: list[str] | None = None) -> int:
    """The ``torchrun`` entry point (see the module docstring)."""
    from vqganodip_pipeline.model.checkpoint import save_checkpoint
    from vqganodip_pipeline.model.config import vqgan_preset
    from vqganodip_pipeline.model.train import train_vqgan

    parser = argparse.ArgumentParser(prog="torchrun ... -m vqganodip_pipeline.model.distributed")
    parser.add_argument("--data", required=True, help=".npz with train (and val) uint8 arrays")
    parser.add_argument("--out", required=True, help="folder of vqgan.pt, history.json, work/")
    parser.add_argument("--preset", default="demo", choices=("tiny", "demo", "paper"))
    parser.add_argument("--steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/work/last.pt")
    args = parser.parse_args(argv)

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        rank, world = rank_and_world()
        with np.load(args.data) as data:
            train = data["train"]
            val = data["val"] if "val" in data.files else None
        config, train_config = vqgan_preset(args.preset)
        config = replace(config, resolution=int(train.shape[1]))
        train_config = replace(
            train_config,
            device="cuda" if cuda else "cpu",
            steps=args.steps or train_config.steps,
            seed=args.seed,
        )
        if train_config.batch_size % world:
            raise ValueError(
                f"batch_size {train_config.batch_size} is not a multiple of the world size {world}"
            )
        out = Path(args.out)
        result = train_vqgan(
            train, val, config, train_config, checkpoint_dir=out / "work", resume=args.resume
        )
        if rank == 0:
            save_checkpoint(
                out / "vqgan.pt",
                model=result.model,
                train_config=train_config,
                discriminator=result.discriminator,
                step=result.step,
                best_step=result.best_step,
                history=result.history,
                data_hash=result.data_hash,
                perceptual=result.perceptual,
                extra={"world_size": world},
            )
            (out / "history.json").write_text(json.dumps({"world_size": world, **result.history}))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
