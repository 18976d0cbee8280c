"""Presets: one object per scale, from unit tests to the paper's settings.

- ``tiny``: tests; seconds on a CPU (64 px boards, a few channels, few steps, few iterations).
- ``demo``: the README's main job on a 2-core CPU in minutes (256 px synthetic PCBA boards).
- ``paper``: the paper's settings (1024 px, codebook 2048 x 512, p=100, n=4, alpha=4, q=250,
  m=30, 500 search iterations with 5-fold CV), for a GPU.

A preset names the VQGAN preset of the same name (model/config.py) and holds everything else:
working resolution, role sizes, GanoDIP parameters and the classifier search budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vqganodip_pipeline.metrics.table import LocalizeConfig
from vqganodip_pipeline.scoring.search import SearchConfig

PRESET_NAMES = ("tiny", "demo", "paper")


@dataclass(frozen=True)
class DemoData:
    """Sizes of the synthetic batches the demo writes."""

    reference_normal: int
    reference_abnormal: int
    production_normal: int
    production_abnormal: int
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    """Everything a run needs besides the data.

    Attributes:
        name: preset name, also the VQGAN preset used.
        image_size: working resolution in px (images of another size are resized).
        m: mask-calibration images (paper: 30).
        holdout_fraction: share of evaluation groups kept for the holdout check.
        localize: GanoDIP parameters (p, n, alpha, q, estimator).
        search_iterations: randomized-search candidates per classifier (paper: 500).
        search_folds: stratified CV folds of the search (paper: 5).
        outer_folds: outer folds of the honest protocol.
        classifiers: classifier codes to try (None: all twelve).
        max_features: metrics the shipped model and both protocols keep, those with the
            strongest training AUROC, ranked inside every fold: a number, "auto" (one per ten
            abnormal training images, at least 2) or None (all). The paper and the honest
            protocol use the same setting, so they differ in protocol only.
        batch_size: images per reconstruction batch.
        demo_data: batch sizes the demo writes.
        min_val_psnr_db: the blocking checkpoint check's floor on held-out normal PSNR, dB.
            The tiny preset's 40 steps at 64 px reach 17.3 dB in fp32 (AMD EPYC here) and
            slightly more with bf16 on AMX CPUs: its floor only catches a broken model.
    """

    name: str
    image_size: int
    m: int
    holdout_fraction: float
    localize: LocalizeConfig
    search_iterations: int
    search_folds: int
    outer_folds: int
    classifiers: tuple[str, ...] | None
    max_features: int | str | None
    batch_size: int
    demo_data: DemoData
    min_val_psnr_db: float = 18.0

    def with_image_size(self, size: int) -> Preset:
        return replace(self, image_size=size)

    def search_config(
        self, seed: int, n_jobs: int = -1, n_iter: int | None = None, **overrides: Any
    ) -> SearchConfig:
        """The classifier search of this preset: ``search_iterations`` candidates (or
        ``n_iter``), ``search_folds`` folds and ``max_features``, seeded; ``overrides`` are
        further SearchConfig fields (e.g. ``cache_preprocessing``)."""
        return SearchConfig(
            n_iter=n_iter or self.search_iterations,
            n_splits=self.search_folds,
            seed=seed,
            n_jobs=n_jobs,
            max_features=self.max_features,
            **overrides,
        )


_PRESETS = {
    "tiny": Preset(
        name="tiny",
        image_size=64,
        m=6,
        holdout_fraction=0.25,
        localize=LocalizeConfig(
            p=20, n=2, alpha=4, q=25, orb_keypoints=50, knn_bank=256, knn_positions=32
        ),
        search_iterations=2,
        search_folds=3,
        outer_folds=3,
        classifiers=("lr", "et", "lda"),
        max_features="auto",
        batch_size=8,
        demo_data=DemoData(48, 24, 6, 2),
        min_val_psnr_db=15.0,
    ),
    "demo": Preset(
        name="demo",
        image_size=256,
        m=30,
        holdout_fraction=0.25,
        localize=LocalizeConfig(p=100, n=4, alpha=4, q=250),
        search_iterations=10,
        search_folds=5,
        outer_folds=5,
        classifiers=None,
        max_features="auto",
        batch_size=16,
        demo_data=DemoData(300, 80, 24, 6),
    ),
    "paper": Preset(
        name="paper",
        image_size=1024,
        m=30,
        holdout_fraction=0.25,
        # 1024 px: 65536 positions; 24 joint channels keep its statistics at 151 MB; the
        # memory bank's pool: 1200 units x 128 positions
        localize=LocalizeConfig(
            p=100, n=4, alpha=4, q=250, joint_channels=24, knn_bank=8192, knn_positions=128
        ),
        search_iterations=500,
        search_folds=5,
        outer_folds=5,
        classifiers=None,
        max_features="auto",
        batch_size=4,
        demo_data=DemoData(1200, 348, 60, 10),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]
