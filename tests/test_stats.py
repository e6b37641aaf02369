"""ActionStats: exact merges, dict round trips, normalisation with a std floor."""

from __future__ import annotations

import numpy as np
import pytest

from hma.stats import ACTION_STD_FLOOR, ActionStats


def test_merge_matches_numpy_on_large_offsets():
    rng = np.random.default_rng(0)
    parts = [rng.normal(512.0, 0.01, (n, 3)) for n in (1, 7, 40)]
    merged = (
        ActionStats.of(parts[0]).merge(ActionStats.of(parts[1])).merge(ActionStats.of(parts[2]))
    )
    allv = np.concatenate(parts)
    np.testing.assert_allclose(merged.mean, allv.mean(0), rtol=1e-14)
    np.testing.assert_allclose(merged.std, allv.std(0), rtol=1e-9)


def test_dict_round_trip_is_exact_with_m2():
    stats = ActionStats.of(np.random.default_rng(1).normal(size=(20, 4)))
    back = ActionStats.from_dict(stats.to_dict(exact=True))
    for field in ("mean", "m2", "min", "max"):
        np.testing.assert_array_equal(getattr(back, field), getattr(stats, field))
    assert back.count == stats.count
    assert "m2" not in stats.to_dict()  # the plain dict keeps its old keys
    approx = ActionStats.from_dict(stats.to_dict())
    np.testing.assert_allclose(approx.m2, stats.m2, rtol=1e-12)


def test_normalise_round_trips_and_floors_constant_dimensions():
    a = np.random.default_rng(2).normal(3.0, 2.0, (50, 3)).astype(np.float32)
    a[:, 2] = 1.0  # a gripper that never moves in the train split
    stats = ActionStats.of(a)
    z = stats.normalise(a)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-5)
    assert not z[:, 2].any()
    np.testing.assert_allclose(stats.denormalise(z), a, atol=1e-5)
    off = stats.normalise(np.array([3.0, 3.0, 1.5], np.float32))
    assert off[2] == pytest.approx(0.5 / ACTION_STD_FLOOR)  # bounded by the floor, not inf
    with pytest.raises(ValueError, match="stats are for"):
        stats.normalise(np.zeros((2, 4)))
