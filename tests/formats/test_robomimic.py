"""robomimic HDF5: exact round trips (local and S3), robomimic's own layout, clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from hma.episodes import Episode, load_registry
from hma.errors import EpisodeError, FormatError
from hma.formats import detect_format
from hma.formats import robomimic as rm

PROPRIO = [["robot0_eef_pos", 3], ["robot0_eef_quat", 4], ["robot0_gripper_qpos", 2]]


def _episodes(make_episode) -> list[Episode]:
    eps = [
        make_episode(
            "robosuite_lift", seed=s, steps=10 + s, split="val" if s in (1, 3) else "train"
        )
        for s in range(4)
    ]
    eps[0].extras = {
        "sim_state": np.random.default_rng(0).normal(size=(10, 32)),  # float64, as robosuite's
        "reward": np.linspace(0, 1, 10, dtype=np.float32),
        "effector_translation": np.arange(20, dtype=np.float32).reshape(10, 2),
    }
    eps[0].meta = {"model_file": "<mujoco>" + "x" * 100_000 + "</mujoco>", "seed": 3}
    eps[1].meta = {"state_keys": PROPRIO}
    eps[2].state = None
    eps[2].success = None
    eps[3].instruction = ""
    return eps


def _assert_same(got: Episode, want: Episode) -> None:
    assert (got.dataset, got.episode_id, got.split) == (want.dataset, want.episode_id, want.split)
    assert (got.hz, got.instruction, got.success) == (want.hz, want.instruction, want.success)
    np.testing.assert_array_equal(got.frames, want.frames)
    assert got.actions.dtype == np.float32
    np.testing.assert_array_equal(got.actions, want.actions)
    if want.state is None:
        assert got.state is None
    else:
        np.testing.assert_array_equal(got.state, want.state)
    assert sorted(got.extras) == sorted(want.extras)
    for key, arr in want.extras.items():
        assert got.extras[key].dtype == arr.dtype
        np.testing.assert_array_equal(got.extras[key], arr)
    assert got.meta == want.meta


def test_round_trip_is_exact_and_layout_is_robomimic(tmp_path, make_episode):
    eps = _episodes(make_episode)
    url = str(tmp_path / "lift.hdf5")
    assert rm.write(iter(eps), url, load_registry()) == 4
    assert rm.sniff(url) and detect_format(url) == "robomimic"

    refs = rm.list_refs(url)
    assert [r["demo"] for r in refs] == ["demo_0", "demo_1", "demo_2", "demo_3"]
    for ref, ep in zip(refs, eps, strict=True):
        _assert_same(rm.load(ref), ep)

    with h5py.File(url, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == sum(len(e) for e in eps)
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        assert env_args["env_kwargs"]["camera_names"] == ["agentview"]
        assert env_args["env_kwargs"]["camera_heights"] == 64
        assert [x.decode() for x in f["mask/train"][()]] == ["demo_0", "demo_2"]
        assert [x.decode() for x in f["mask/valid"][()]] == ["demo_1", "demo_3"]
        assert set(f["mask"]) == {"train", "valid"}  # provenance masks only in mixed files
        d0, d1, d2 = data["demo_0"], data["demo_1"], data["demo_2"]
        assert d0.attrs["num_samples"] == 10
        assert d0.attrs["model_file"].startswith("<mujoco>")
        assert d0["obs/agentview_image"].dtype == np.uint8
        assert d0["obs/agentview_image"].shape == (10, 64, 64, 3)
        assert d0["obs/agentview_image"].compression == "gzip"
        # next_obs is obs one step later, the last step repeated
        np.testing.assert_array_equal(d0["next_obs/agentview_image"][:9], eps[0].frames[1:])
        np.testing.assert_array_equal(d0["next_obs/agentview_image"][9], eps[0].frames[9])
        np.testing.assert_array_equal(d0["states"][()], eps[0].extras["sim_state"])
        np.testing.assert_array_equal(d0["rewards"][()], eps[0].extras["reward"])
        np.testing.assert_array_equal(d0["obs/state"][()], eps[0].state)
        assert "effector_translation" in d0["obs"] and "effector_translation" in d0["next_obs"]
        # state split over robomimic's proprio keys when meta names them
        assert sorted(d1["obs"]) == ["agentview_image", *sorted(k for k, _ in PROPRIO)]
        np.testing.assert_array_equal(d1["obs/robot0_eef_quat"][()], eps[1].state[:, 3:7])
        # defaults where the episode carries no reward/done/sim state
        assert d1["states"].shape == (11, 0)
        assert d1["dones"][()].tolist() == [0] * 10 + [1]
        assert d1["rewards"][-1] == 1.0  # seed 1 succeeded
        assert sorted(d2["obs"]) == ["agentview_image"]


def test_s3_round_trip(s3_bucket, make_episode):
    eps = [make_episode("pusht", seed=s, split="val" if s == 0 else "train") for s in range(3)]
    url = f"{s3_bucket}/data/pusht.hdf5"
    assert rm.write(eps, url, load_registry()) == 3
    assert rm.sniff(url)
    refs = rm.list_refs(url)
    assert [r["split"] for r in refs] == ["val", "train", "train"]
    for ref, ep in zip(refs, eps, strict=True):
        _assert_same(rm.load(ref), ep)
    with h5py.File(rm.storage.filesystem(url)[0].open(url, "rb"), "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    assert env_args["type"] == 2 and env_args["env_kwargs"]["camera_names"] == ["top"]


def test_env_args_passed_through_from_meta(tmp_path, make_episode):
    env_args = {"env_name": "Lift", "type": 1, "env_version": "1.5.2", "env_kwargs": {"a": 1}}
    ep = make_episode(meta={"env_args": env_args})
    url = str(tmp_path / "a.hdf5")
    rm.write([ep], url, load_registry())
    with h5py.File(url, "r") as f:
        assert json.loads(f["data"].attrs["env_args"]) == env_args


def _native_file(path, n_demos: int = 11, steps: int = 5) -> np.ndarray:
    """A file laid out as robomimic's own datasets are: no hma attrs, float64 arrays.
    Returns the frames of every demo, indexed by demo number."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (n_demos, steps, 8, 8, 3), dtype=np.uint8)
    env_args = {
        "env_name": "Lift",
        "type": 1,
        "env_version": "1.4.1",
        "env_kwargs": {"control_freq": 20, "camera_names": ["agentview"]},
    }
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = n_demos * steps
        data.attrs["env_args"] = json.dumps(env_args)
        for i in range(n_demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = steps
            g.attrs["model_file"] = f"<mujoco model='{i}'/>"
            g["actions"] = np.full((steps, 7), i, np.float64)
            g["states"] = np.zeros((steps, 45))
            g["rewards"] = np.zeros(steps)
            g["dones"] = np.zeros(steps, np.int64)
            for prefix in ("obs", "next_obs"):
                g[f"{prefix}/agentview_image"] = frames[i]
                g[f"{prefix}/robot0_eye_in_hand_image"] = frames[i]
                g[f"{prefix}/robot0_eef_pos"] = np.full((steps, 3), 0.5)
                g[f"{prefix}/robot0_eef_quat"] = np.full((steps, 4), 0.25)
                g[f"{prefix}/robot0_gripper_qpos"] = np.full((steps, 2), 0.125)
                g[f"{prefix}/object"] = np.ones((steps, 10))
        f["mask/train"] = np.array([f"demo_{i}" for i in range(n_demos - 2)], dtype="S")
        f["mask/valid"] = np.array([f"demo_{i}" for i in range(n_demos - 2, n_demos)], dtype="S")
    return frames


def test_reads_robomimic_native_file_with_defaults(tmp_path):
    url = str(tmp_path / "image.hdf5")
    frames = _native_file(url)
    assert rm.sniff(url)
    with pytest.raises(FormatError, match="dataset"):
        rm.list_refs(url)
    refs = rm.list_refs(url, "robosuite_lift")
    # numeric order, not h5py's lexical demo_0, demo_1, demo_10, demo_2
    assert [r["demo"] for r in refs] == [f"demo_{i}" for i in range(11)]
    assert [r["split"] for r in refs] == ["train"] * 9 + ["val"] * 2
    ep = rm.load(refs[10])
    assert ep.episode_id == f"{url}#demo_10"
    assert (ep.dataset, ep.hz, ep.success, ep.instruction) == ("robosuite_lift", 20.0, None, "")
    np.testing.assert_array_equal(ep.frames, frames[10])
    assert ep.actions.dtype == np.float32 and (ep.actions == 10).all()
    assert ep.state.dtype == np.float32 and ep.state.shape == (5, 9)
    np.testing.assert_array_equal(ep.state[0], [0.5] * 3 + [0.25] * 4 + [0.125] * 2)
    assert sorted(ep.extras) == [
        "done",
        "object",
        "reward",
        "robot0_eye_in_hand_image",
        "sim_state",
    ]
    assert ep.extras["sim_state"].shape == (5, 45)
    assert ep.meta["env_args"]["env_version"] == "1.4.1"
    assert ep.meta["model_file"] == "<mujoco model='10'/>"
    assert ep.meta["state_keys"] == PROPRIO

    # re-written, the robomimic obs keys come back under their own names
    out = str(tmp_path / "rewritten.hdf5")
    rm.write([ep], out, load_registry())
    with h5py.File(out, "r") as f:
        demo = f["data/demo_0"]
        assert sorted(demo["obs"]) == [
            "agentview_image",
            "object",
            "robot0_eef_pos",
            "robot0_eef_quat",
            "robot0_eye_in_hand_image",
            "robot0_gripper_qpos",
        ]
        assert demo["states"].shape == (5, 45)
        assert json.loads(f["data"].attrs["env_args"])["env_version"] == "1.4.1"
    _assert_same(rm.load(rm.list_refs(out)[0]), ep)


def test_missing_data_group_names_file(tmp_path):
    url = str(tmp_path / "other.hdf5")
    with h5py.File(url, "w") as f:
        f["something"] = np.zeros(3)
    assert not rm.sniff(url)
    with pytest.raises(FormatError, match=rf"{url}.*'data' group"):
        rm.list_refs(url, "robosuite_lift")


def test_missing_image_or_actions_names_file_demo_and_key(tmp_path, make_episode):
    url = str(tmp_path / "broken.hdf5")
    rm.write([make_episode(seed=s) for s in range(2)], url, load_registry())
    with h5py.File(url, "a") as f:
        del f["data/demo_0/actions"]
        del f["data/demo_1/obs/agentview_image"]
    refs = rm.list_refs(url)
    with pytest.raises(FormatError, match=rf"{url}: demo_0: missing dataset 'actions'"):
        rm.load(refs[0])
    with pytest.raises(FormatError, match=rf"{url}: demo_1: .*'obs/agentview_image'.*state"):
        rm.load(refs[1])


def test_missing_or_non_hdf5_file(tmp_path):
    missing = str(tmp_path / "nope.hdf5")
    with pytest.raises(FormatError, match=rf"{missing}: file not found"):
        rm.list_refs(missing, "pusht")
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    assert not rm.sniff(str(junk))
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        rm.list_refs(str(junk), "pusht")


def test_write_refuses_mixed_datasets_and_unknown_dataset(tmp_path, make_episode):
    url = str(tmp_path / "mixed.hdf5")
    with pytest.raises(FormatError, match="one dataset; episode .pusht-0."):
        rm.write([make_episode("robosuite_lift"), make_episode("pusht")], url, load_registry())
    assert not (tmp_path / "mixed.hdf5").exists()  # no partial file left behind
    stranger = make_episode()
    stranger.dataset = "nosuch"
    with pytest.raises(EpisodeError, match="unknown dataset"):
        rm.write([stranger], url, load_registry())
