"""Episode schema, row round trip, registry loading and the validation errors users see."""

from __future__ import annotations

import numpy as np
import pytest

from hma.episodes import (
    Episode,
    chunk_actions,
    hold_frames,
    keep_frames,
    kept_steps,
    load_registry,
    unchunk_actions,
    validate_episode,
)
from hma.errors import ConfigError, EpisodeError


def test_row_round_trip_keeps_every_field(make_episode):
    ep = make_episode(
        extras={"reward": np.arange(12, dtype=np.float32)}, meta={"env_args": {"env_name": "Lift"}}
    )
    back = Episode.from_row(ep.to_row())
    assert (back.dataset, back.episode_id, back.split) == (ep.dataset, ep.episode_id, ep.split)
    np.testing.assert_array_equal(back.frames, ep.frames)
    np.testing.assert_array_equal(back.actions, ep.actions)
    np.testing.assert_array_equal(back.state, ep.state)
    np.testing.assert_array_equal(back.extras["reward"], ep.extras["reward"])
    assert back.meta == ep.meta
    assert (back.hz, back.instruction, back.success) == (ep.hz, ep.instruction, ep.success)


def test_row_round_trip_optional_fields_absent(make_episode):
    ep = make_episode(state=None, success=None)
    back = Episode.from_row(ep.to_row())
    assert back.state is None and back.success is None and back.extras == {}


def test_valid_episode_passes(make_episode):
    spec = validate_episode(make_episode(), load_registry())
    assert spec.action_dim == 7


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda ep: setattr(ep, "dataset", "no_such_robot"), "dataset", "unknown dataset"),
        (lambda ep: ep.actions.__setitem__((3, 1), np.nan), "actions", "non-finite"),
        (lambda ep: ep.actions.__setitem__((5, 0), np.inf), "actions", "non-finite"),
        (lambda ep: setattr(ep, "actions", ep.actions[:-2]), "actions", "length 10 != 12"),
        (lambda ep: setattr(ep, "actions", ep.actions[:, :4]), "actions", "action dim 4"),
        (lambda ep: setattr(ep, "state", ep.state[:5]), "state", "expected [12,S]"),
        (lambda ep: ep.state.__setitem__((2, 0), np.nan), "state", "non-finite"),
        (lambda ep: setattr(ep, "frames", ep.frames[..., :1]), "frames", "uint8 [T,H,W,3]"),
        (lambda ep: setattr(ep, "split", "test"), "split", "must be one of"),
        (lambda ep: ep.extras.__setitem__("reward", np.zeros(3)), "extras.reward", "length"),
    ],
)
def test_bad_episode_error_names_dataset_episode_and_field(make_episode, change, field, words):
    ep = make_episode(dataset="robosuite_lift", seed=7)
    change(ep)
    with pytest.raises(EpisodeError) as info:
        validate_episode(ep, load_registry())
    err = info.value
    assert err.field == field
    assert err.episode_id == "robosuite_lift-7"
    assert words in str(err)
    assert repr(err.dataset) in str(err) and "robosuite_lift-7" in str(err)


def test_nan_report_points_at_first_bad_step(make_episode):
    ep = make_episode()
    ep.actions[4, 2] = np.nan
    with pytest.raises(EpisodeError, match="first at step 4, dim 2"):
        validate_episode(ep, load_registry())


def test_registry_has_the_simulated_datasets():
    registry = load_registry()
    for name in ("pusht", "tabletop", "robosuite_lift", "robosuite_can", "metaworld_reach"):
        assert name in registry.datasets
    assert registry.get("robosuite_lift").image_key == "agentview_image"


def test_user_registry_extends_builtin(tmp_path, monkeypatch):
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "datasets:\n  my_arm:\n    embodiment: ur5\n    action_dim: 6\n    hz: 15\n"
        "    camera: wrist\n    frame_size: [128, 128]\n    stride: 3\n"
    )
    monkeypatch.setenv("HMA_REGISTRY", str(extra))
    registry = load_registry()
    assert registry.get("my_arm").stride == 3
    assert "pusht" in registry.datasets


def test_bad_registry_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "datasets:\n  arm:\n    embodiment: ur5\n    action_dim: -1\n    hz: 10\n"
        "    camera: c\n    frame_size: [8, 8]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_registry([str(bad)])
    msg = str(info.value)
    assert str(bad) in msg and "datasets.arm.action_dim" in msg and "greater than 0" in msg


def test_keep_frames_and_chunk_actions_apply_the_stride():
    raw = np.arange(14, dtype=np.float32).reshape(7, 2)  # T=7, A=2
    np.testing.assert_array_equal(keep_frames(7, 2), [0, 2, 4])
    chunked = chunk_actions(raw, 2)
    assert chunked.shape == (3, 2, 2)  # the 7th step is dropped with the frame it leads to
    np.testing.assert_array_equal(chunked[1], raw[2:4])
    assert chunk_actions(raw[:1], 2).shape == (0, 2, 2)


def test_held_frames_and_unchunked_actions_invert_the_stride():
    """A generated clip of F kept frames becomes F*s raw steps; re-striding gives it back."""
    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)  # F=3
    chunks = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)  # F=3, s=4, A=2
    held, raw = hold_frames(frames, 4), unchunk_actions(chunks)
    assert held.shape == (12, 2, 2, 3) and raw.shape == (12, 2)
    np.testing.assert_array_equal(held[keep_frames(len(held), 4)], frames)
    np.testing.assert_array_equal(chunk_actions(raw, 4), chunks)
    np.testing.assert_array_equal(kept_steps(3, 4), [0, 4, 8])
