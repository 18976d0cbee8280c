"""Presets hand their search settings to every place that searches (the composite asset, the
ablation and scoring benchmarks) in one way."""

import pytest

from vqganodip_pipeline.defs.scoring_assets import search_config
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.presets import PRESET_NAMES, get_preset


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_search_config_carries_the_presets_budget(name: str) -> None:
    preset = get_preset(name)
    config = preset.search_config(seed=5)
    assert (config.n_iter, config.n_splits, config.max_features, config.seed, config.n_jobs) == (
        preset.search_iterations,
        preset.search_folds,
        preset.max_features,
        5,
        -1,
    )
    narrowed = preset.search_config(seed=1, n_jobs=2, n_iter=3, cache_preprocessing=False)
    assert (narrowed.n_iter, narrowed.n_jobs, narrowed.cache_preprocessing) == (3, 2, False)
    # the composite asset's config: iterations 0 means the preset's
    settings = PipelineSettings(preset=name)
    assert search_config(settings, 0, 5) == config
    assert search_config(settings, 7, 5).n_iter == 7
