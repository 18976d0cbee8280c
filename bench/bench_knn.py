"""Benchmark: the nearest-neighbour distance map against index libraries (faiss-cpu).

Per image, every position's PatchCore embedding is compared with the coreset memory bank
(``localize.nearest_neighbour.nearest_distances``: exact, blocks of 256 queries, one fused
matrix product each, torch float32). Measured against, in the same process:

* ``faiss_flat``: ``faiss.IndexFlatL2`` (exact, BLAS), distances = sqrt of its squared ones;
* ``faiss_hnsw``: ``faiss.IndexHNSWFlat`` (approximate graph search, M = 32, efSearch = 64),
  with its build time, the share of positions whose distance equals the exact one (rtol 1e-4)
  and the largest relative overestimate.

Two cases at the presets' sizes: ``demo`` (one 256 px board: 4096 queries, a bank of 4096) and
``paper`` (65536 queries, as one 1024 px board, a bank of 8192). Bank and queries are real
embeddings: MobileNetV2 features of synthetic normal boards (the bank: ``fit_memory_bank`` of 80
boards, 256 positions each) and of other boards (the queries). Times are medians over
``--repeats`` runs in milliseconds, at 1 and 2 threads; ratio = torch / other (higher = the other
is faster). faiss-cpu is not a dependency of the package: without it only torch is timed.

Run: ``.venv/bin/python bench/bench_knn.py [--quick] [--out PATH]`` -> prints a table, writes
``bench/results/knn.json`` (``knn_quick.json`` with ``--quick``: the demo case, one repeat).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import load_average, median_time, write_result
from bench.bench_normal_fit import (
    DEFAULT_WEIGHTS,
    MOBILENET_FILE,
    feature_backbone,
    normal_boards,
)
from vqganodip_pipeline.localize.nearest_neighbour import (
    draw_embeddings,
    fit_memory_bank,
    nearest_distances,
)

CASES = {"demo": (4096, 4096), "paper": (65536, 8192)}  # (queries, bank entries)


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _squared_nearest(index: Any, queries: np.ndarray) -> np.ndarray:
    return index.search(queries, 1)[0][:, 0]


def run_case(
    name: str, bank: torch.Tensor, queries: torch.Tensor, repeats: int
) -> list[dict[str, Any]]:
    faiss = _faiss()
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        exact_s, exact = median_time(lambda _: nearest_distances(queries, bank).numpy(), repeats)
        row: dict[str, Any] = {
            "case": name,
            "threads": threads,
            "queries": len(queries),
            "bank": len(bank),
            "channels": int(bank.shape[1]),
            "torch_ms": 1e3 * exact_s,
        }
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
            q, b = queries.numpy(), bank.numpy()
            flat = faiss.IndexFlatL2(b.shape[1])
            flat.add(b)
            flat_s, flat_out = median_time(
                lambda _, index=flat, q=q: _squared_nearest(index, q), repeats
            )
            flat_d = np.sqrt(np.maximum(flat_out[0], 0.0))
            start = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(b.shape[1], 32)
            hnsw.add(b)
            hnsw.hnsw.efSearch = 64
            build_s = time.perf_counter() - start
            hnsw_s, hnsw_out = median_time(
                lambda _, index=hnsw, q=q: _squared_nearest(index, q), repeats
            )
            hnsw_d = np.sqrt(np.maximum(hnsw_out[0], 0.0))
            reference = exact[0]
            scale = np.maximum(reference, 1e-6)
            row.update(
                {
                    "faiss_flat_ms": 1e3 * flat_s,
                    "faiss_flat_ratio": exact_s / flat_s,
                    "faiss_flat_max_relative_difference": float(
                        np.max(np.abs(flat_d - reference) / scale)
                    ),
                    "faiss_hnsw_ms": 1e3 * hnsw_s,
                    "faiss_hnsw_ratio": exact_s / hnsw_s,
                    "faiss_hnsw_build_s": build_s,
                    "faiss_hnsw_share_exact": float(np.mean(np.isclose(hnsw_d, reference, 1e-4))),
                    "faiss_hnsw_max_relative_overestimate": float(
                        np.max((hnsw_d - reference) / scale)
                    ),
                }
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the demo case, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS / MOBILENET_FILE))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started_load = load_average()
    repeats = 1 if args.quick else args.repeats
    backbone, weights = feature_backbone(args.weights)
    torch.set_num_threads(1)
    boards = normal_boards(48 if args.quick else 96, 256)
    bank_units = boards[:32] if args.quick else boards[:80]
    queries = draw_embeddings(backbone, boards[-16:], positions=4096, batch_size=16)[0]
    rows, pool = [], len(bank_units) * 256  # positions drawn for the bank
    for name, (n_queries, bank_size) in CASES.items():
        if args.quick and name != "demo":
            continue
        # the library's own bank: 256 positions per unit, then the greedy coreset
        memory = fit_memory_bank(backbone, bank_units, size=bank_size, positions=256, batch_size=16)
        bank = torch.from_numpy(memory.bank)
        rows += run_case(name, bank, queries[:n_queries], repeats)
    for row in rows:
        line = (
            f"{row['case']:>5} {row['queries']:>6} queries x {row['bank']} bank, "
            f"{row['threads']} thread(s): torch {row['torch_ms']:.1f} ms"
        )
        if "faiss_flat_ms" in row:
            line += (
                f", faiss flat {row['faiss_flat_ms']:.1f} ms (x{row['faiss_flat_ratio']:.2f}), "
                f"HNSW {row['faiss_hnsw_ms']:.1f} ms (x{row['faiss_hnsw_ratio']:.2f}, exact "
                f"{row['faiss_hnsw_share_exact']:.3f})"
            )
        print(line)
    faiss = _faiss()
    payload = {
        "benchmark": "nearest-neighbour distance map: torch blocks against faiss-cpu",
        "quick": args.quick,
        "backbone": backbone.name,
        "weights": weights or "none: the untrained VQGAN discriminator's features",
        "faiss": faiss.__version__ if faiss is not None else "not installed",
        "repeats": repeats,
        "pool": pool,
        "rows": rows,
        "machine": {"load_average_at_start": started_load},
    }
    name = "knn_quick" if args.quick else "knn"
    written = write_result(name, payload, Path(args.out) if args.out else None)
    print(f"[bench_knn] wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
