"""Code versions: the import closure they hash, and the table of which modules each asset calls."""

import pytest

from vqganodip_pipeline.defs.keys import name_of
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.versions import ASSET_CODE, asset_code_version
from vqganodip_pipeline.versioning import (
    imported_modules,
    module_closure,
    module_source,
)

P = "vqganodip_pipeline."


def test_imported_modules_resolves_absolute_relative_and_function_level_imports() -> None:
    source = (
        "from vqganodip_pipeline.scoring import thresholds\n"
        "from . import table\n"
        "from .conformal import RiskStatement\n"
        "import numpy as np\n"
        "def f():\n"
        "    from vqganodip_pipeline.hashing import sha256_hex\n"
    )
    found = imported_modules(P + "scoring.model", source)
    assert found == {
        "vqganodip_pipeline.scoring",
        P + "scoring.thresholds",
        P + "scoring.table",
        P + "scoring.conformal",
        P + "hashing",
    }


def test_the_closure_follows_imports_transitively_and_only_within_the_package() -> None:
    closure = module_closure([P + "scoring.model"])
    assert P + "scoring.thresholds" in closure  # model -> calibrate -> conformal -> thresholds
    assert all(name.startswith(P) for name in closure)
    assert P + "model.train" not in closure and P + "defs.release" not in closure
    # every module it lists exists as a file, and its text is what is hashed
    for name, text in closure.items():
        assert text == module_source(name)


def test_a_source_change_changes_exactly_the_versions_whose_closure_holds_it() -> None:
    settings = PipelineSettings(preset="tiny")
    module = P + "scoring.thresholds"
    changed = {module: module_source(module) + "\n# changed\n"}
    moved = {
        name
        for name in ASSET_CODE
        if asset_code_version(name, settings) != asset_code_version(name, settings, changed)
    }
    holds = {
        name
        for name, (_, modules) in ASSET_CODE.items()
        if module in module_closure([P + m for m in modules])
    }
    assert moved == holds
    assert "composite_score_model" in moved and "vqgan_checkpoint" not in moved


def test_settings_move_every_version_but_the_ingestion_ones() -> None:
    tiny, demo = PipelineSettings(preset="tiny"), PipelineSettings(preset="demo")
    for name in ASSET_CODE:
        same = asset_code_version(name, tiny) == asset_code_version(name, demo)
        assert same == name.startswith(("reference_", "batch_images", "batch_quarantine")), name


def test_downsampling_moves_the_fingerprint_only_when_it_changes_the_vqgan() -> None:
    demo = PipelineSettings(preset="demo")
    same = PipelineSettings(preset="demo", downsampling=8)  # demo's own f
    fine = PipelineSettings(preset="demo", downsampling=4)
    assert same.fingerprint() == demo.fingerprint()
    assert "downsampling" not in demo.fingerprint_fields()
    assert fine.fingerprint_fields()["downsampling"] == "4"
    assert fine.fingerprint() != demo.fingerprint()
    config, train = fine.vqgan_configs()
    assert (config.f, config.ch_mult, config.resolution) == (4, (1, 2, 4), 256)
    assert train == demo.vqgan_configs()[1]
    assert asset_code_version("vqgan_checkpoint", fine) != asset_code_version(
        "vqgan_checkpoint", demo
    )
    with pytest.raises(ValueError, match="f=3: must be a power of two"):
        PipelineSettings(preset="demo", downsampling=3).vqgan_configs()
    # demo trains on 64 px crops: f = 128 cannot fit one, and says so
    with pytest.raises(ValueError, match="crop_size=64 is not a multiple of the downsampling"):
        PipelineSettings(preset="demo", downsampling=128).vqgan_configs()


def test_backbone_layers_move_the_fingerprint_only_when_they_differ_from_the_default() -> None:
    demo = PipelineSettings(preset="demo")
    same = PipelineSettings(preset="demo", backbone_layers="3,6")
    deeper = PipelineSettings(preset="demo", backbone_layers=" 3, 6 ,10")
    assert demo.backbone_layer_indices() is None
    assert deeper.backbone_layer_indices() == (3, 6, 10)
    assert same.fingerprint() == demo.fingerprint()
    assert "backbone_layers" not in demo.fingerprint_fields()
    assert deeper.fingerprint_fields()["backbone_layers"] == "3,6,10"
    assert deeper.fingerprint() != demo.fingerprint()
    assert asset_code_version("weighting_mask", deeper) != asset_code_version(
        "weighting_mask", demo
    )
    for bad, reason in (("3,x", "comma-separated"), ("3,19", "0..18"), ("6,6", "each named once")):
        with pytest.raises(ValueError, match=reason):
            PipelineSettings(backbone_layers=bad).backbone_layer_indices()


@pytest.mark.parametrize("defining", sorted({defining for defining, _ in ASSET_CODE.values()}))
def test_asset_code_covers_every_library_module_its_dagster_module_imports(defining: str) -> None:
    # what a Dagster module imports from the library is called by one of its assets; the table
    # must name it (or a module importing it) for at least one of them
    imported = {
        m
        for m in imported_modules(P + defining, module_source(P + defining))
        if not m.startswith(P + "defs") and m != "vqganodip_pipeline"
    }
    covered: set[str] = set()
    for where, modules in ASSET_CODE.values():
        if where == defining:
            covered |= set(module_closure([P + m for m in modules]))
    assert imported <= covered, sorted(imported - covered)


def test_every_asset_of_the_code_location_has_a_version_entry() -> None:
    from vqganodip_pipeline.definitions import defs

    keys = {name_of(k) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == set(ASSET_CODE)
