"""Fixtures of the localisation tests: a tiny PatchGAN backbone and synthetic normal units."""

from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.data.synthetic import make_layout, render_unit
from vqganodip_pipeline.features.backbones import DiscriminatorBackbone
from vqganodip_pipeline.model.config import vqgan_preset
from vqganodip_pipeline.model.vqgan import build_discriminator


@pytest.fixture(scope="module")
def backbone() -> DiscriminatorBackbone:
    config, _ = vqgan_preset("tiny")
    return DiscriminatorBackbone(build_discriminator(config, seed=0))


@pytest.fixture(scope="module")
def normals_128() -> np.ndarray:
    """40 normal 128 px units of layout 0."""
    layout = make_layout(0)
    return np.stack([render_unit(layout, size=128, seed=100 + i)[0] for i in range(40)])
