"""The seven aggregates against numpy, vectorised over leading axes, empty input."""

from __future__ import annotations

import numpy as np
import pytest

from vqganodip_pipeline.metrics.aggregates import AGGREGATES, aggregate


def _numpy_reference(values: np.ndarray) -> dict[str, float]:
    return {
        "sum": float(np.sum(values)),
        "max": float(np.max(values)),
        "min": float(np.min(values)),
        "mean": float(np.mean(values)),
        "q1": float(np.percentile(values, 25)),
        "median": float(np.median(values)),
        "q3": float(np.percentile(values, 75)),
    }


def test_names_and_order() -> None:
    assert AGGREGATES == ("sum", "max", "min", "mean", "q1", "median", "q3")
    assert tuple(aggregate(np.arange(5.0))) == AGGREGATES


@pytest.mark.parametrize("n", [1, 2, 3, 7, 250])
def test_one_dimensional_matches_numpy(n: int) -> None:
    values = np.random.default_rng(n).normal(size=n)
    got = aggregate(values)
    ref = _numpy_reference(values)
    for name in AGGREGATES:
        assert isinstance(got[name], float), name
        assert got[name] == pytest.approx(ref[name], rel=1e-12, abs=1e-15), name


def test_linear_interpolation_quartiles_by_hand() -> None:
    # Five values: Q1 sits at position 1 -> 2.0; ten values: Q1 at 2.25 -> 3.25 (linear).
    got = aggregate(np.array([5.0, 1.0, 4.0, 2.0, 3.0]))
    assert (got["q1"], got["median"], got["q3"]) == (2.0, 3.0, 4.0)
    got = aggregate(np.arange(1.0, 11.0))
    assert got["q1"] == pytest.approx(3.25)
    assert got["median"] == pytest.approx(5.5)
    assert got["q3"] == pytest.approx(7.75)
    assert (got["sum"], got["max"], got["min"], got["mean"]) == (55.0, 10.0, 1.0, 5.5)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_vectorised_over_other_axes(axis: int) -> None:
    values = np.random.default_rng(0).random((6, 9))
    got = aggregate(values, axis=axis)
    moved = np.moveaxis(values, axis, -1)
    for name in AGGREGATES:
        assert got[name].shape == moved.shape[:-1], name
        expected = [_numpy_reference(row)[name] for row in moved]
        np.testing.assert_allclose(got[name], expected, rtol=1e-12, err_msg=name)


def test_three_dimensional_input() -> None:
    values = np.random.default_rng(1).random((3, 4, 25))
    got = aggregate(values)
    np.testing.assert_allclose(got["q3"], np.percentile(values, 75, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(got["sum"], values.sum(axis=-1), rtol=1e-12)


def test_empty_input_gives_zero_not_nan() -> None:
    got = aggregate(np.array([]))
    assert got == dict.fromkeys(AGGREGATES, 0.0)
    got = aggregate(np.zeros((4, 0)))
    for name in AGGREGATES:
        np.testing.assert_array_equal(got[name], np.zeros(4))


def test_integer_and_list_input() -> None:
    got = aggregate([3, 1, 2])
    assert got["mean"] == 2.0 and got["sum"] == 6.0 and isinstance(got["sum"], float)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        (np.array([1.0, np.nan]), {}, "NaN or inf"),
        (np.array([1.0, np.inf]), {}, "NaN or inf"),
        (np.float64(1.0), {}, "scalar"),
        (np.array(["a", "b"]), {}, "real numbers"),
        (np.zeros((2, 3)), {"axis": 2}, "out of range"),
    ],
)
def test_bad_input(values: np.ndarray, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate(values, **kwargs)


def test_quartiles_equal_numpy_bit_for_bit() -> None:
    from vqganodip_pipeline.metrics.aggregates import quartiles

    rng = np.random.default_rng(3)
    for n in (*range(1, 40), 255, 4096, 65536):
        for values in (rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)):  # ties
            expected = np.percentile(values, (25, 50, 75), method="linear")
            np.testing.assert_array_equal(quartiles(values), expected)
    stack = rng.exponential(size=(4, 3, 17))
    np.testing.assert_array_equal(
        quartiles(stack), np.percentile(stack, (25, 50, 75), axis=-1, method="linear")
    )
