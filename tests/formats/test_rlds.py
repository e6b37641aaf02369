"""RLDS (TFDS directory of TFRecord shards): write -> read round trips, on-disk layout, real TFDS data.

TensorFlow is not a dependency, so the layout TFDS relies on is asserted by decoding the records
directly, and one tiny dataset written by TFDS 4.9.10 itself (below) is read back.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile

import numpy as np
import pytest

from hma import storage
from hma.episodes import EpisodeError, load_registry
from hma.errors import FormatError
from hma.formats import get_format, load_row, rlds, tfrecord

# A Language Table schema dataset (2 episodes x 3 steps, 4x6 PNG frames, no episode_metadata)
# written by tensorflow_datasets 4.9.10 `GeneratorBasedBuilder.download_and_prepare()`:
# rgb = 10*t + 100*e, effector_translation = [0.1*t, e], action = [0.01*t, -0.02*e],
# reward = 1 at the last step, instructions below; a .tar.gz of the version directory.
TFDS_INSTRUCTIONS = {"push the red moon to the left": 0, "slide the blue cube up": 1}
TFDS_LANGUAGE_TABLE = (
    "H4sIAAAAAAAAA+1a32sjRRzfnJ6WIT2voWqvnrpGPO7hsvm1SYqotWcaG0jbo41wIiXdJJNkj81u3J3tUWqgnCAo4pM+"
    "iC/C+VBEfPJFEO4PuMohHPgDH+RQUEGQexecnU022TY/t2l6beYD2dmd+c73O7Pf73fmO/sN52cOHQGMWCRCSoy9JbkP"
    "hqOBUCwa4El9LBaIMWzk8IfGMLqGBJVlGVVRUCe6bu3HFJw/LyBBgygjygWFu6Yp8sBlGAqO8nxb/fPRsF3/wXCIjzBs"
    "YOAjaYER1/8WYFlvQZRgQlHLAvK+yHpRQYU5Rc17LxltZSWvS3BJKEOjLZMpC6KcyZhtcq1WEuSiLhRhBglZCZptWkUS"
    "kYZb38JPLLtFrjVZFQGV0rBckQRE+m/F59Jzq/Ppqm9r9Uoqma5yW4lkaj6xvLI4RyoX5lbimauZ5UTmzSphT1jVxSMV"
    "j6mpWi9f3kTQkO3lw6FQo0UrCWo+BeUiKjVGRlpC3tr9Gimr+LpGprEBVU1UZINXgAtwQS+oHrXKBgrOX4AC0lWoHY7v"
    "G+js/8FIiI/u8f8QHw5Q/x8GTL/01o0gLuaMNWCr4Rn1Flut6U0IVvZXk6bKJiop8muSoGn1lQNBWVPUgqRcz9R2HI3D"
    "qwzkLPurb0S1Ci5uPlvu2ywavq1DOQdbSm8edluCzrPuSN2VklALOWSuG91pCb2jV2ZSWG8sTR5bvLCWEs3OPY+Q9Mmj"
    "zQoZGx6VgMKhHmWRvlhhSl6Ui0Z3WZFhP33xyl3prMzWwxXLeJJYD/blvuf+1rbQG9Z6pq72RNmdqtr9HXpFLVMQVa27"
    "hVs9HNmilhMkQeVWSTEUG8wqijR0Axyy5rAOqOKOo+IQVMuiLEhUecdNeUpWg+qG0N/23Vco0bJn/7sbLBRgDuH9H0ew"
    "RRw44XOQrEn9DdzGcOgxiE26A6u09T9AbGLjcwCDtfFxFrPYWBwwfrHx6jOWaUbvcU0zevNZ5z168OVmNLkL9RPqJ215"
    "jbyfiLKGVL2/46uNwQlxD1GmzrGXVyQ48u6hFrPO3EIsC0XnqmzYpY4Nc+agdtn43F/BRnoyjJN3OA+LQfSgDMLHwDkc"
    "LKmOFnRi7tZ6niTG359jDvprWo+nY0ezrd9k8vgAyCWaT4MDOZSq8Lqg5k/cx4Sj+ow8sO8JHSnat3ZQ+XDsr80AvBLJ"
    "jhoyfcH9Pe0TajyZdzWeg5/AyUq5PlDg/PbkvY8k07n6fwB8JEXrUwrkJuhMRpf8b4APhPbkf2OhAM3/DgXlMbN84q+F"
    "n8DfZ8El4CZ5Xb+Zv/Sc90yDqRrtNvjx+ZfM8qZZngNnTOp6jsnz6PRp8JCLYcCOGzxttjV9T/U3nS0977mn33WDbXdF"
    "10osKkFWhXm2rCgyixTyLMHCSXzlFHZQ/Y82qP5HG+DGKfD4/q1CLWY9f7rAHy4w//6VpdfHwTTAxOPJhfgKLh/Bv4fH"
    "TuGrt/DzJC7cyfhceuzT3Prnz+CnFON6Sn3hF4N9cn4p/vXl9RtgsRc2kzU2v9+7l331dMo9tT3zHAMuMhc+ulX4xjm7"
    "yYkJwWLnucvE3/j1XMTG7jyYsLbSeu7Y3E0ZxgWmwLjVavwloNGSABf2v7tWqQ7bVs58v7v7slmmXiFKYOsbv3nS9Jz1"
    "nAHuhpK2Z8Ei8HWStC8HaQmcxb9be8vUxrfjei34eGftsx/A/Q7BBw44vjOCD7O8aZYDCT40ScxDstpkJR2yOT0LWb0y"
    "WAOneHBB9T/aoPofbYAP2gYf/7rAP67+tvlUMtnY5q/yLv7Ju//NGGKcRQ27t2/nLHbrv7lWrn1x/zHn7L7a2Vm32Ikf"
    "uip3lr981sZuqEHI9qwZhBilEYTgEGPYQcgnH1+8c4jGRUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBcQT4HxrI01MAUAAA"
)


@pytest.fixture
def registry():
    return load_registry()


def tabletop_episodes(make_episode, n=4, val=(3,)):
    out = []
    for seed in range(n):
        steps = 10 + seed
        rng = np.random.default_rng(100 + seed)
        out.append(
            make_episode(
                "tabletop",
                steps=steps,
                seed=seed,
                split="val" if seed in val else "train",
                state=None,
                instruction=f"push the red star to the top left corner #{seed} — ✓",
                success=None if seed == 2 else bool(seed % 2),
                extras={
                    "effector_translation": rng.normal(size=(steps, 2)).astype(np.float32),
                    "effector_target_translation": rng.normal(size=(steps, 2)).astype(np.float32),
                    "reward": rng.uniform(size=steps).astype(np.float32),
                },
                meta={"seed": seed, "source": f"sim://tabletop/{seed}"},
            )
        )
    return out


def assert_same_episode(got, want):
    assert got.dataset == want.dataset
    assert got.episode_id == want.episode_id
    assert got.split == want.split
    assert got.hz == want.hz
    assert got.instruction == want.instruction
    assert got.success == want.success
    assert got.meta == want.meta
    np.testing.assert_array_equal(got.frames, want.frames)  # PNG is lossless
    assert got.actions.dtype == np.float32
    np.testing.assert_array_equal(got.actions, want.actions)
    if want.state is None:
        assert got.state is None
    else:
        np.testing.assert_array_equal(got.state, want.state)
    assert got.extras.keys() == want.extras.keys()
    for key, value in want.extras.items():
        assert got.extras[key].dtype == value.dtype
        np.testing.assert_array_equal(got.extras[key], value)


def read_all(url, dataset=None):
    return {ep.episode_id: ep for ep in map(rlds.load, rlds.list_refs(url, dataset))}


def test_tabletop_round_trip_in_language_table_schema(tmp_path, make_episode, registry):
    url = str(tmp_path / "tabletop" / "0.1.0")
    episodes = tabletop_episodes(make_episode)
    assert rlds.write(iter(episodes), url, registry, episodes_per_shard=2) == 4
    assert rlds.sniff(url) and rlds.sniff(str(tmp_path / "tabletop"))
    assert get_format("rlds").sniff(url)

    names = sorted(p.name for p in (tmp_path / "tabletop" / "0.1.0").iterdir())
    assert names == [
        "dataset_info.json",
        "features.json",
        "tabletop-train.tfrecord-00000-of-00002",
        "tabletop-train.tfrecord-00001-of-00002",
        "tabletop-val.tfrecord-00000-of-00001",
    ]
    info = json.loads((tmp_path / "tabletop" / "0.1.0" / "dataset_info.json").read_text())
    assert info["name"] == "tabletop" and info["version"] == "0.1.0"
    assert info["fileFormat"] == "tfrecord"
    assert {s["name"]: s["shardLengths"] for s in info["splits"]} == {
        "train": ["2", "1"],
        "val": ["1"],
    }

    got = read_all(url)
    assert got.keys() == {ep.episode_id for ep in episodes}
    for ep in episodes:
        assert_same_episode(got[ep.episode_id], ep)
    # Refs find each episode by offset, from headers alone.
    refs = rlds.list_refs(str(tmp_path / "tabletop"), None)
    assert [r["split"] for r in refs] == ["train", "train", "train", "val"]
    assert refs[1]["offset"] > 0 and refs[1]["index"] == 1


def test_tabletop_records_have_the_language_table_layout(tmp_path, make_episode, registry):
    """What TFDS parses: one flat Example per episode, T values per step key."""
    url = str(tmp_path / "lt")
    ep = tabletop_episodes(make_episode, n=1, val=())[0]
    rlds.write([ep], url, registry)
    features = json.loads((tmp_path / "lt" / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]
    assert steps["pythonClassName"].endswith("dataset_feature.Dataset")
    step = steps["sequence"]["feature"]["featuresDict"]["features"]
    obs = step["observation"]["featuresDict"]["features"]
    assert obs["rgb"]["image"] == {
        "shape": {"dimensions": ["64", "64", "3"]},
        "dtype": "uint8",
        "encodingFormat": "png",
    }
    assert obs["instruction"]["tensor"]["shape"] == {"dimensions": ["512"]}
    assert obs["instruction"]["tensor"]["dtype"] == "int32"
    assert obs["effector_translation"]["tensor"]["dtype"] == "float32"
    assert set(step) == {"observation", "action", "reward", "is_first", "is_last", "is_terminal"}
    assert set(obs) == {"rgb", "instruction", "effector_translation", "effector_target_translation"}

    shard = tmp_path / "lt" / "tabletop-train.tfrecord-00000-of-00001"
    with open(shard, "rb") as f:
        (payload,) = tfrecord.iter_records(f, str(shard))
    example = tfrecord.decode_example(payload)
    steps_n = len(ep)
    assert len(example["steps/observation/rgb"]) == steps_n
    assert example["steps/observation/rgb"][0][:4] == b"\x89PNG"
    np.testing.assert_array_equal(example["steps/action"], ep.actions.ravel())
    np.testing.assert_array_equal(example["steps/is_first"], np.arange(steps_n) == 0)
    np.testing.assert_array_equal(example["steps/is_last"], np.arange(steps_n) == steps_n - 1)
    codes = example["steps/observation/instruction"].reshape(steps_n, 512)
    text = ep.instruction.encode()
    np.testing.assert_array_equal(codes[:, : len(text)], np.tile(list(text), (steps_n, 1)))
    assert not codes[:, len(text) :].any()


def test_open_x_round_trip_robosuite_lift(tmp_path, make_episode, registry):
    url = str(tmp_path / "lift")
    episodes = [
        make_episode("robosuite_lift", steps=12, seed=s, split="val" if s == 2 else "train")
        for s in range(3)
    ]
    rng = np.random.default_rng(0)
    episodes[0].extras = {
        "discount": np.full(12, 0.99, np.float32),
        "sim_state": rng.normal(size=(12, 5)),  # float64, kept exact (raw bytes per step)
        "contacts": rng.integers(0, 2, size=(12, 3)).astype(bool),
    }
    for ep in episodes[1:]:
        ep.extras = {k: v[:12].copy() for k, v in episodes[0].extras.items()}
    assert rlds.write(episodes, url, registry) == 3
    got = read_all(url)
    for ep in episodes:
        assert got[ep.episode_id].actions.shape == (12, 7)
        assert_same_episode(got[ep.episode_id], ep)

    step = json.loads((tmp_path / "lift" / "features.json").read_text())["featuresDict"]
    step = step["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    assert step["action"]["tensor"]["shape"] == {"dimensions": ["7"]}
    assert step["language_instruction"]["pythonClassName"].endswith("text_feature.Text")
    obs = step["observation"]["featuresDict"]["features"]
    assert set(obs) == {"image", "state", "sim_state", "contacts"}
    assert obs["sim_state"]["tensor"] == {
        "shape": {"dimensions": ["5"]},
        "dtype": "float64",
        "encoding": "bytes",
    }
    assert obs["state"]["tensor"]["shape"] == {"dimensions": ["9"]}


def test_frame_size_may_vary_and_jpeg_is_close(tmp_path, make_episode, registry):
    url = str(tmp_path / "jpeg")
    episodes = [make_episode("pusht", steps=8, seed=0, size=64)]
    episodes.append(make_episode("pusht", steps=9, seed=1, size=48))
    rlds.write(episodes, url, registry, image_format="jpeg")
    features = json.loads((tmp_path / "jpeg" / "features.json").read_text())
    step = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]
    image = step["featuresDict"]["features"]["observation"]["featuresDict"]["features"]["image"]
    assert image["image"]["shape"] == {"dimensions": ["-1", "-1", "3"]}
    assert image["image"]["encodingFormat"] == "jpeg"
    got = read_all(url)
    for ep in episodes:
        frames = got[ep.episode_id].frames
        assert frames.shape == ep.frames.shape
        assert np.abs(frames.astype(int) - ep.frames).mean() < 6


def test_reads_a_dataset_written_by_tfds(tmp_path):
    root = tmp_path / "language_table"
    blob = base64.b64decode("".join(TFDS_LANGUAGE_TABLE))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root / "0.0.1", filter="data")
    assert rlds.sniff(str(root))
    with pytest.raises(FormatError, match="pass the registry dataset name"):
        rlds.list_refs(str(root), None)
    refs = rlds.list_refs(str(root), "tabletop")
    assert len(refs) == 2
    for ref in refs:
        ep = rlds.load(ref)
        e = TFDS_INSTRUCTIONS[ep.instruction]
        assert ep.dataset == "tabletop" and ep.split == "train" and ep.hz == 10.0
        assert ep.episode_id == f"language_table-train.tfrecord-00000-of-00001#{ref['index']}"
        assert ep.success is None
        assert ep.frames.shape == (3, 4, 6, 3)
        np.testing.assert_array_equal(ep.frames[:, 0, 0, 0], [100 * e, 100 * e + 10, 100 * e + 20])
        expected_actions = np.array([[0.01 * t, -0.02 * e] for t in range(3)], np.float32)
        np.testing.assert_array_equal(ep.actions, expected_actions)
        translation = np.array([[0.1 * t, e] for t in range(3)], np.float32)
        np.testing.assert_array_equal(ep.state, translation)  # effector position as state
        np.testing.assert_array_equal(ep.extras["effector_translation"], translation)
        np.testing.assert_array_equal(ep.extras["reward"], [0, 0, 1])
        assert set(ep.extras) == {"effector_translation", "effector_target_translation", "reward"}


def test_s3_round_trip(s3_bucket, make_episode, registry):
    url = f"{s3_bucket}/rlds/tabletop/1.0.0"
    episodes = tabletop_episodes(make_episode, n=3, val=(1,))
    assert rlds.write(episodes, url, registry, episodes_per_shard=1) == 3
    assert rlds.sniff(url)
    assert storage.exists(f"{url}/tabletop-train.tfrecord-00001-of-00002")
    assert not [p for p in storage.filesystem(url)[0].ls(url[5:]) if ".tmp-" in p]
    got = read_all(f"{s3_bucket}/rlds/tabletop")
    for ep in episodes:
        assert_same_episode(got[ep.episode_id], ep)


@pytest.mark.parametrize("missing", ["features.json", "dataset_info.json"])
def test_missing_metadata_file_is_named(tmp_path, make_episode, registry, missing):
    url = str(tmp_path / "ds")
    rlds.write([make_episode()], url, registry)
    (tmp_path / "ds" / missing).unlink()
    assert not rlds.sniff(url)
    with pytest.raises(FormatError, match=missing):
        rlds.list_refs(url, None)


def test_corrupt_or_missing_records_are_reported(tmp_path, make_episode, registry):
    url = str(tmp_path / "ds")
    rlds.write([make_episode(seed=s) for s in range(3)], url, registry)
    shard = tmp_path / "ds" / "robosuite_lift-train.tfrecord-00000-of-00001"
    refs = rlds.list_refs(url, None)
    data = bytearray(shard.read_bytes())
    data[refs[1]["offset"] + 200] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert rlds.load(refs[0]).episode_id == "robosuite_lift-0"  # neighbours still load
    with pytest.raises(FormatError, match=rf"{shard}: record 1 .*checksum"):
        rlds.load(refs[1])
    # The Ray reader's row loader turns it into a labelled rejected row instead of a crash.
    row = load_row(refs[1], registry)
    assert row["error"].startswith("FormatError") and "record 1" in row["error"]
    assert load_row(refs[2], registry)["error"] == ""
    shard.write_bytes(bytes(data[: refs[2]["offset"]]))  # lose the last record
    with pytest.raises(FormatError, match=r"2 records but .*dataset_info.json lists 3"):
        rlds.list_refs(url, None)


def test_writer_refuses_bad_input(tmp_path, make_episode, registry):
    url = str(tmp_path / "ds")
    with pytest.raises(EpisodeError, match="one RLDS directory holds"):
        rlds.write([make_episode("robosuite_lift"), make_episode("pusht")], url, registry)
    assert not rlds.sniff(url)  # nothing half-written looks like a dataset
    assert not list((tmp_path / "ds").iterdir())  # temporary shards removed
    with pytest.raises(EpisodeError, match="action dim"):
        rlds.write([make_episode(actions=np.zeros((12, 3), np.float32))], url, registry)
    with pytest.raises(EpisodeError, match="observation/state"):
        rlds.write([make_episode(seed=0), make_episode(seed=1, state=None)], url, registry)
    rlds.write([make_episode()], url, registry)
    with pytest.raises(FormatError, match="already exists"):
        rlds.write([make_episode()], url, registry)
