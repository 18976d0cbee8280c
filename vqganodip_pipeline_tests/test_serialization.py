"""The stored composite model: a bundle that round-trips exactly and cannot run code when read.

Every candidate classifier's fitted pipeline is made of trusted types only (so the trusted list
is complete); a bundle whose estimator or dataclass names any other type, or a pickle put in its
place, is refused before anything of it is built."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from vqganodip_pipeline import serialization
from vqganodip_pipeline.scoring import SearchConfig
from vqganodip_pipeline.scoring.classifiers import (
    CLASSIFIERS,
    PERSISTED_TYPES,
    SmoteSettings,
    build_pipeline,
)
from vqganodip_pipeline.serialization import UntrustedContentError
from vqganodip_pipeline.workflow.scoring import (
    ScoringOutcome,
    bundle_to_bytes,
    bytes_to_bundle,
    score_metric_table,
)
from vqganodip_pipeline_tests.scoring.tables import make_metric_table


@pytest.fixture(scope="module")
def bundle() -> dict:
    table = make_metric_table(n_normal=24, n_abnormal=18, n_noise=4)
    holdout = make_metric_table(n_normal=5, n_abnormal=5, n_noise=4, seed=11)
    holdout["role"] = "holdout"
    outcome = score_metric_table(
        pd.concat([table, holdout], ignore_index=True),
        classifiers=("lr", "nb"),
        search=SearchConfig(n_iter=2, n_splits=3, n_jobs=1, seed=0),
        outer_folds=3,
        log=lambda message: None,
    )
    return {"model": outcome.shipped, "outcome": outcome, "trained_on": ["a", "b"]}


def test_every_candidate_pipeline_is_made_of_trusted_types_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 5)), columns=[f"m{i}" for i in range(5)])
    y = np.r_[np.zeros(45), np.ones(15)].astype(int)
    seen: set[str] = set()
    # every classifier with its defaults, and KNN with each distance its search space offers
    variants = [(code, spec, None) for code, spec in CLASSIFIERS.items()]
    variants += [("knn", CLASSIFIERS["knn"], {"p": p}) for p in CLASSIFIERS["knn"].space(60)["p"]]
    for code, spec, params in variants:
        smote = SmoteSettings(ratio=0.5, k_neighbors=3)
        pipeline = build_pipeline(spec, seed=0, smote=smote, params=params)
        pipeline.fit(x, y)
        data = sio.dumps(pipeline)
        types = set(sio.get_untrusted_types(data=data))
        assert types <= PERSISTED_TYPES, (code, types - PERSISTED_TYPES)
        seen |= types
        loaded = sio.loads(data, trusted=sorted(types))
        np.testing.assert_array_equal(loaded.predict_proba(x), pipeline.predict_proba(x))
        # stored twice, equal bytes (skops names arrays after memory addresses; renumbered)
        stored = serialization.bundle_to_bytes({"p": pipeline}, [], PERSISTED_TYPES)
        assert stored == serialization.bundle_to_bytes({"p": pipeline}, [], PERSISTED_TYPES), code
        again = serialization.bytes_to_bundle(stored, [], PERSISTED_TYPES)["p"]
        np.testing.assert_array_equal(again.predict_proba(x), pipeline.predict_proba(x))
    assert seen == PERSISTED_TYPES  # nothing in the list that no candidate needs


def test_bundle_round_trips_exactly_and_deterministically(bundle: dict) -> None:
    data = bundle_to_bytes(bundle)
    assert data == bundle_to_bytes(bundle)  # equal content, equal bytes (and digest)
    loaded = bytes_to_bundle(data)
    model, outcome = loaded["model"], loaded["outcome"]
    assert isinstance(outcome, ScoringOutcome) and loaded["trained_on"] == ["a", "b"]
    table = make_metric_table(n_normal=6, n_abnormal=6, n_noise=4, seed=7)
    np.testing.assert_array_equal(model.score(table), bundle["model"].score(table))
    assert model.risk == bundle["model"].risk and model.params == bundle["model"].params
    pd.testing.assert_frame_equal(model.selection, bundle["model"].selection)
    pd.testing.assert_frame_equal(model.calibration_scores, bundle["model"].calibration_scores)
    original = bundle["outcome"]
    pd.testing.assert_frame_equal(outcome.honest_leaderboard, original.honest_leaderboard)
    pd.testing.assert_frame_equal(outcome.paper_leaderboard, original.paper_leaderboard)
    assert outcome.holdout == original.holdout and outcome.shortcut == original.shortcut
    # the shipped model inside the outcome holds the same fitted pipelines, each stored once
    members = zip(outcome.shipped.pipeline.members, model.pipeline.members, strict=True)
    assert all(a is b for a, b in members)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        stored = [n for n in archive.namelist() if n.endswith(".skops")]
    assert stored == [f"estimators/{i}.skops" for i in range(len(model.pipeline.members))]


def _replace_member(data: bytes, name: str, content: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for member in source.namelist():
            target.writestr(member, content if member == name else source.read(member))
    return buffer.getvalue()


def test_a_tampered_estimator_is_refused_before_it_is_built(bundle: dict, tmp_path: Path) -> None:
    evil = sio.dumps(FunctionTransformer(func=os.system, kw_args={"command": "touch pwned"}))
    tampered = _replace_member(bundle_to_bytes(bundle), "estimators/0.skops", evil)
    with pytest.raises(UntrustedContentError, match="system"):
        bytes_to_bundle(tampered)


def test_an_unknown_dataclass_is_refused(bundle: dict) -> None:
    data = bundle_to_bytes(bundle)
    root = zipfile.ZipFile(io.BytesIO(data)).read("bundle.json")
    renamed = root.replace(b'"ScoringOutcome"', b'"ArbitraryClass"')
    with pytest.raises(UntrustedContentError, match="ArbitraryClass"):
        bytes_to_bundle(_replace_member(data, "bundle.json", renamed))
    with pytest.raises(TypeError, match="not one of the bundle's dataclasses"):
        serialization.bundle_to_bytes(SearchConfig(), [], PERSISTED_TYPES)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_in_place_of_a_bundle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="not a model bundle"):
        bytes_to_bundle(pickle.dumps(_Payload(marker)))
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload does run when unpickled
    assert marker.exists()
