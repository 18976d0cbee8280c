"""Benchmark: the two costly steps of fitting what normal units look like (``weighting_mask``).

Both run once per trained model, on the m calibration units plus the VQGAN's training units
(``pipeline.compute_normal_variation``), and each is timed against the direct formula it
replaced, in the same process:

* ``coreset``: PatchCore's greedy k-centre coreset of the memory bank
  (``localize.nearest_neighbour.greedy_coreset``: squared distances to each pick as
  |p|^2 + |c|^2 - 2 p.c, one matrix-vector product) against the same loop with the distances
  computed by subtraction, ``((points - c) ** 2).sum(1)``, on a pool of ``--units`` x
  ``--positions`` real embeddings (MobileNetV2 features of synthetic normal boards, locally
  drawn as the bank's pool, ``localize.nearest_neighbour.draw_embeddings``) and a bank of ``--bank``
  entries (the demo preset's sizes by default). Correctness: the share of picks the two share
  and the first pick where they part (a float32 near tie).
* ``moments``: the per-position sum of outer products of the feature-deviation statistics
  (``localize.feature_deviation.fit_feature_statistics``: one batched ``torch.bmm`` in float64)
  against ``np.einsum("npc,npd->pcd")``, for each of the backbone's maps and the joint map of a
  batch of the demo's size. Correctness: the largest absolute difference.

Times are medians over ``--repeats`` runs (seconds); ratio = reference / library (higher =
faster). One torch thread, as the demo's training step runs.

Run: ``.venv/bin/python bench/bench_normal_fit.py [--quick] [--out PATH]`` -> prints a table,
writes ``bench/results/normal_fit.json`` (``normal_fit_quick.json`` with ``--quick``: a small
pool, one repeat).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO_ROOT, load_average, median_time, write_result
from vqganodip_pipeline.data.synthetic import generate_images
from vqganodip_pipeline.localize.feature_deviation import _joint_layout, joint_feature_map
from vqganodip_pipeline.localize.nearest_neighbour import draw_embeddings, greedy_coreset
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.tensors import images_to_tensor
from vqganodip_pipeline.model.vqgan import build_discriminator
from vqganodip_pipeline.pipeline import build_backbone
from vqganodip_pipeline.presets import get_preset

DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "data" / "weights"
MOBILENET_FILE = "mobilenet_v2_imagenet_from_tflite.pt"


def reference_coreset(features: torch.Tensor, size: int, seed: int = 0) -> np.ndarray:
    """The greedy k-centre coreset with distances by subtraction (the formula replaced); the
    same start and projection rule as ``greedy_coreset`` (no projection below 128 channels)."""
    count = len(features)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if points.shape[1] > 128:
        raise ValueError("the reference is for pools of at most 128 channels (no projection)")
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = int(torch.randint(count, (1,), generator=generator))
    nearest = ((points - points[chosen[0]]) ** 2).sum(1)
    for i in range(1, size):
        chosen[i] = int(torch.argmax(nearest))
        nearest = torch.minimum(nearest, ((points - points[chosen[i]]) ** 2).sum(1))
    return np.sort(chosen)


def feature_backbone(weights_path: str) -> tuple[Any, str | None]:
    """(backbone, the weights file used or None): ImageNet MobileNetV2 from ``weights_path`` when
    the file exists, else the pipeline's documented fallback, the VQGAN discriminator's features
    (an untrained one here: the timings do not depend on training)."""
    weights = weights_path if Path(weights_path).is_file() else None
    discriminator = build_discriminator(vqgan_preset("demo")[0], seed=0).eval()
    choice = build_backbone("auto", weights_path=weights, discriminator=discriminator)
    return choice.backbone, weights


def normal_boards(n: int, size: int) -> np.ndarray:
    """``n`` synthetic normal boards (``data.synthetic.generate_images``, seed 300)."""
    return generate_images(n, 0, size=size, seed=300).images


def bench_coreset(pool: torch.Tensor, bank: int, repeats: int) -> dict[str, Any]:
    library_s, library = median_time(lambda _: greedy_coreset(pool, bank), repeats)
    reference_s, reference = median_time(lambda _: reference_coreset(pool, bank), repeats)
    a, b = set(library[0].tolist()), set(reference[0].tolist())
    return {
        "pool": list(pool.shape),
        "bank": bank,
        "library_s": library_s,
        "reference_s": reference_s,
        "ratio": reference_s / library_s,
        "shared_picks": len(a & b) / bank,
    }


def bench_moments(backbone: Any, boards: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    with torch.no_grad():
        maps = backbone.feature_maps(images_to_tensor(boards))
    stride, index = _joint_layout(maps, tuple(backbone.strides), 64, 0)
    maps = [*maps, joint_feature_map(maps, backbone.strides, stride, index)]
    rows = []
    for name, m in zip([*map(str, range(len(maps) - 1)), "joint"], maps, strict=True):
        values = m.double().numpy()
        vectors = values.reshape(*values.shape[:2], -1).transpose(0, 2, 1)  # (n, P, C)

        def library(_: int, vectors: np.ndarray = vectors) -> np.ndarray:
            per_position = torch.from_numpy(vectors.transpose(1, 0, 2))
            return torch.bmm(per_position.transpose(1, 2), per_position).numpy()

        def reference(_: int, vectors: np.ndarray = vectors) -> np.ndarray:
            return np.einsum("npc,npd->pcd", vectors, vectors)

        library_s, ours = median_time(library, repeats)
        reference_s, theirs = median_time(reference, repeats)
        rows.append(
            {
                "map": name,
                "shape_n_p_c": list(vectors.shape),
                "library_s": library_s,
                "reference_s": reference_s,
                "ratio": reference_s / library_s,
                "max_abs_difference": float(np.abs(ours[0] - theirs[0]).max()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small pool, one repeat")
    parser.add_argument("--units", type=int, default=230, help="normal units in the pool")
    parser.add_argument("--positions", type=int, default=None, help="default: the preset's")
    parser.add_argument("--bank", type=int, default=None, help="default: the preset's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS / MOBILENET_FILE))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started_load = load_average()
    torch.set_num_threads(1)
    localize = get_preset("demo").localize
    units = 24 if args.quick else args.units
    positions = args.positions or localize.knn_positions
    bank = args.bank or (256 if args.quick else localize.knn_bank)
    repeats = 1 if args.quick else args.repeats
    backbone, weights = feature_backbone(args.weights)
    boards = normal_boards(units, 256)
    pool = draw_embeddings(backbone, boards, positions=positions, batch_size=16)[0]
    coreset = bench_coreset(pool, bank, repeats)
    moments = bench_moments(backbone, boards[:16], repeats)
    print(
        f"coreset {coreset['pool'][0]} x {coreset['pool'][1]} -> {bank}: library "
        f"{coreset['library_s']:.2f} s, reference {coreset['reference_s']:.2f} s "
        f"(x{coreset['ratio']:.1f}), shared picks {coreset['shared_picks']:.4f}"
    )
    for row in moments:
        print(
            f"moments map {row['map']:>5} {row['shape_n_p_c']}: library {row['library_s']:.3f} s,"
            f" reference {row['reference_s']:.3f} s (x{row['ratio']:.1f}), max |diff| "
            f"{row['max_abs_difference']:.2e}"
        )
    payload = {
        "benchmark": "fitting the normal variation: greedy coreset and per-position moments",
        "quick": args.quick,
        "backbone": backbone.name,
        "weights": weights or "none: the untrained VQGAN discriminator's features",
        "units": units,
        "positions": positions,
        "repeats": repeats,
        "coreset": coreset,
        "moments": moments,
        "machine": {"load_average_at_start": started_load, "torch_threads": 1},
    }
    name = "normal_fit_quick" if args.quick else "normal_fit"
    written = write_result(name, payload, Path(args.out) if args.out else None)
    print(f"[bench_normal_fit] wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
