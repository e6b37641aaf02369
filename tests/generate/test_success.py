"""The success classifier: labels from episode outcomes, learning a separable labelling, the hold
rule, checkpoints, and `hma simulate train-success` on a real dataset on disk."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from hma import formats
from hma.cli.generate import configure_train_success, train_success_command
from hma.episodes import Episode, load_registry
from hma.generate.success import (
    SuccessClassifier,
    SuccessConfig,
    SuccessModelError,
    calibrate,
    episode_success,
    first_success,
    label_episode,
    train_success,
)
from tests.helpers.generate import source_episode

DATASET = "robosuite_lift"
STEPS = 16
FAST = SuccessConfig(image_size=32, widths=(8, 16), steps=120, seed=0)


def _mark(frames: np.ndarray) -> np.ndarray:
    """The 'solved' look: a green square in the top-left quarter."""
    out = frames.copy()
    q = frames.shape[1] // 2
    out[:, 2:q, 2:q] = (40, 220, 60)
    return out


def episode(index: int, success: bool) -> Episode:
    """A moving-block episode; a success shows the green square over its last 4 frames."""
    ep = source_episode(DATASET, index, STEPS)
    ep.success = success
    if success:
        ep.frames[-4:] = _mark(ep.frames[-4:])
    return ep


def test_labels_come_from_the_episode_outcome():
    cfg = SuccessConfig(positive_tail=3, negative_head=0.5, frames_per_episode=100)
    rng = np.random.default_rng(0)
    index, labels = label_episode(episode(0, True), cfg, rng)
    assert list(index[labels == 1]) == [13, 14, 15]  # the last 3 frames
    assert list(index[labels == 0]) == list(range(8))  # the first half; the middle is left out
    index, labels = label_episode(episode(1, False), cfg, rng)
    assert list(index) == list(range(STEPS)) and not labels.any()
    few = SuccessConfig(frames_per_episode=5)
    index, labels = label_episode(episode(1, False), few, rng)
    assert len(index) == 5 and len(set(index)) == 5  # bounded, without repeats


def test_hold_rule_needs_consecutive_frames():
    assert not episode_success(np.array([0.9, 0.1, 0.9, 0.2]), 0.5, hold=2)
    assert episode_success(np.array([0.1, 0.9, 0.8, 0.2]), 0.5, hold=2)
    assert episode_success(np.array([0.6]), 0.5, hold=1)
    assert not episode_success(np.array([]), 0.5, hold=1)
    assert first_success(np.array([0.1, 0.9, 0.8, 0.9]), 0.5, hold=2) == 2
    assert first_success(np.array([0.9, 0.1]), 0.5, hold=2) is None


def test_calibration_picks_the_rule_that_judges_held_out_episodes_best():
    # a weak policy's near-miss scores 0.2; the successes only reach 0.3: the default rule
    # (0.5, hold 2) calls everything a failure, 0.25 with hold 2 separates them
    episodes = [
        (np.array([0.1, 0.3, 0.35]), True),
        (np.array([0.2, 0.32, 0.31]), True),
        (np.array([0.1, 0.2, 0.2]), False),
        (np.array([0.05, 0.3, 0.1]), False),  # one spurious frame: hold 2 keeps it a failure
    ]
    default = SuccessConfig()  # threshold 0.5, hold 2
    probs, labels = [p for p, _ in episodes], [y for _, y in episodes]
    config = calibrate(default, probs, labels)
    assert (config.threshold, config.hold) == (0.25, 2)
    assert calibrate(default, probs[:2], labels[:2]) == default  # no failures: nothing to balance


def test_learns_a_separable_labelling_and_round_trips(tmp_path):
    episodes = [episode(i, success=i % 2 == 0) for i in range(10)]  # index 4, 9: val split
    model, summary = train_success(iter(episodes), FAST)
    assert summary.episodes == 10 and summary.successes == 5 and summary.dataset == DATASET
    assert summary.train_accuracy > 0.95 and summary.val_accuracy > 0.9
    assert summary.val_episode_accuracy == 1.0
    unseen = source_episode(DATASET, 50, STEPS).frames  # another episode, other size below
    plain = model.predict(unseen)
    marked = model.predict(_mark(unseen))
    assert (plain < 0.5).all() and (marked > 0.5).all()
    assert model.predict(_mark(unseen)[:, ::2, ::2]).min() > 0.5  # any frame size
    url = str(tmp_path / "clf")
    model.save(url)
    loaded = SuccessClassifier.load(url)
    np.testing.assert_allclose(loaded.predict(unseen), plain, rtol=0, atol=1e-6)
    assert loaded.fingerprint == model.fingerprint and loaded.dataset == DATASET
    assert loaded.summary["val_episode_accuracy"] == 1.0


def test_training_refuses_what_it_cannot_learn():
    with pytest.raises(SuccessModelError, match="both successful and failed"):
        train_success([episode(i, success=False) for i in range(3)], FAST)
    unknown = episode(0, True)
    unknown.success = None
    with pytest.raises(SuccessModelError, match="no episodes with a known success"):
        train_success([unknown], FAST)
    mixed = [episode(0, True), source_episode("tabletop", 1, STEPS)]
    with pytest.raises(SuccessModelError, match="tabletop"):
        train_success(mixed, FAST)


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(SuccessModelError, match="not a success classifier"):
        SuccessClassifier.load(str(tmp_path / "nothing"))


def test_cli_trains_on_a_robomimic_dataset(tmp_path, capsys):
    src = str(tmp_path / "lift.hdf5")
    formats.write_episodes(
        [episode(i, success=i % 2 == 0) for i in range(6)], src, "robomimic", load_registry()
    )
    parser = argparse.ArgumentParser()
    configure_train_success(parser)
    out = str(tmp_path / "clf")
    args = parser.parse_args(["--source", src, "--out", out, "--steps", "120", "--size", "32"])
    assert train_success_command(args) == 0
    assert "6 episodes (3 successful)" in capsys.readouterr().out
    model = SuccessClassifier.load(out)
    assert model.dataset == DATASET and model.config.image_size == 32
