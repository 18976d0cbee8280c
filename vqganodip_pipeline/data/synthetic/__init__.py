"""Synthetic PCBA images: the project's embedded default dataset.

A fiducial-centred AOI view of one product (``make_layout``): green solder mask, copper traces
and pour, tinned pads, silkscreen, 0402 ... 1206 passives, SOD/SOT/SOIC/TQFP parts with leads,
an electrolytic can, solder fillets with specular highlights, fiducials and a per-unit 2D
serial code. Units vary within process windows (``Variation``: placement jitter and rotation,
solder volume, lighting, sensor noise, serial code, marking) and can carry one of
``DEFECT_TYPES`` with a pixel-exact mask. The layout lives in board millimetres and renders at
any resolution; everything is deterministic given the seeds.

Example::

    layout = make_layout(0)
    image, mask = render_unit(layout, size=256, seed=7, defect="solder_bridge")
    write_mvtec_dataset("out/pcba", n_normal=200, n_abnormal=40, size=256, seed=0)
"""

from __future__ import annotations

from .dataset import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SyntheticSet,
    generate_images,
    write_mvtec_dataset,
)
from .defects import DEFECT_SIZES, DEFECT_TYPES
from .layout import BOARD_MM, BoardLayout, make_layout
from .render import render_unit
from .unit import Variation

__all__ = [
    "BOARD_MM",
    "DEFECT_SIZES",
    "DEFECT_TYPES",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "BoardLayout",
    "SyntheticSet",
    "Variation",
    "generate_images",
    "make_layout",
    "render_unit",
    "write_mvtec_dataset",
]
