"""VQGAN training under ``torchrun`` (model/distributed.py): world size 2 on CPU (gloo) follows
the loss curve of world size 1 on the same data and global batch, and writes a checkpoint that
the single-process code loads and reconstructs with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.local_services import free_port
from vqganodip_pipeline.model.checkpoint import load_checkpoint
from vqganodip_pipeline.model.train import evaluate_reconstruction

pytestmark = pytest.mark.slow
STEPS = 30


def torchrun(world: int, data: Path, out: Path) -> dict:
    """Train the tiny preset with ``world`` processes; returns the written history."""
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={world}",
        "--nnodes=1", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
        "-m", "vqganodip_pipeline.model.distributed",
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--device", "cpu",
        "--steps", str(STEPS),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "history.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("ddp")
    normal = generate_images(24, 0, size=32, seed=3).images
    data = root / "data.npz"
    np.savez(data, train=normal[:16], val=normal[16:])
    return {
        world: (root / f"w{world}", torchrun(world, data, root / f"w{world}")) for world in (1, 2)
    }


def curve(history: dict, name: str) -> np.ndarray:
    return np.array([record[name] for record in history["train"]])


def test_world_size_two_follows_the_loss_curve_of_one(runs: dict[int, tuple[Path, dict]]) -> None:
    one, two = runs[1][1], runs[2][1]
    assert one["world_size"] == 1 and two["world_size"] == 2
    steps_one = [r["step"] for r in one["train"]]
    assert steps_one == [r["step"] for r in two["train"]] and steps_one[-1] == STEPS
    for name in ("rec_loss", "loss"):
        a, b = curve(one, name), curve(two, name)
        # both fall, by a similar factor, and move together step window by step window
        assert a[-1] < 0.8 * a[0] and b[-1] < 0.8 * b[0], (name, a, b)
        assert abs(np.log(a[-1] / a[0]) - np.log(b[-1] / b[0])) < 0.5, (name, a, b)
        assert np.corrcoef(a, b)[0, 1] > 0.8, (name, a, b)
        # rank 0 logs its half of each batch: same level within 30 %
        assert np.all(np.abs(b - a) <= 0.3 * a + 1e-3), (name, a, b)
    # the held-out PSNR of both runs ends close
    psnr = [runs[w][1]["eval"][-1]["val_psnr"] for w in (1, 2)]
    assert abs(psnr[0] - psnr[1]) < 2.5, psnr


def test_the_ddp_checkpoint_loads_in_the_single_process_code(
    runs: dict[int, tuple[Path, dict]],
) -> None:
    out, history = runs[2]
    checkpoint = load_checkpoint(out / "vqgan.pt")
    assert checkpoint.step == STEPS
    # no DDP wrapper prefix in the stored weights
    assert not any(k.startswith("module.") for k in checkpoint.model.state_dict())
    val = generate_images(24, 0, size=32, seed=3).images[16:]
    metrics = evaluate_reconstruction(
        checkpoint.model, val, batch_size=4, device=torch.device("cpu"), precision="fp32"
    )
    assert abs(metrics["val_psnr"] - history["eval"][-1]["val_psnr"]) < 0.5
    # and a single-process run resumes from the DDP run's last state
    resumed = load_checkpoint(out / "work" / "last.pt")
    assert resumed.optimizers is not None and resumed.trainer_state is not None
