"""Presets: one object per scale, from unit tests to the paper's settings.

- ``tiny``: tests; seconds on a CPU (64 px boards, a few channels, few steps).
- ``demo``: the README's main job on a 2-core CPU in minutes (256 px synthetic PCBA boards).
- ``paper``: the paper's settings (1024 px, codebook 2048 x 512, p=100, n=4, alpha=4, q=250,
  m=30, 500 search iterations), for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    name: str
    image_size: int
    m: int  # mask-calibration images
    holdout_fraction: float
    demo_data: DemoData
    extra: dict[str, object] = field(default_factory=dict)

    def with_image_size(self, size: int) -> Preset:
        return replace(self, image_size=size)


_PRESETS = {
    "tiny": Preset(
        name="tiny",
        image_size=64,
        m=6,
        holdout_fraction=0.25,
        demo_data=DemoData(48, 16, 6, 2),
    ),
    "demo": Preset(
        name="demo",
        image_size=256,
        m=30,
        holdout_fraction=0.25,
        demo_data=DemoData(300, 80, 24, 6),
    ),
    "paper": Preset(
        name="paper",
        image_size=1024,
        m=30,
        holdout_fraction=0.25,
        demo_data=DemoData(1200, 348, 60, 10),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]
