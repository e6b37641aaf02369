"""A dataset appears at its destination whole or not at all: a failed or killed write leaves
nothing that blocks the re-run, and a conversion that rejects everything says why."""

from __future__ import annotations

import os

import pytest

from hma import storage
from hma.cli import main
from hma.formats import iter_episodes, write_episodes

FORMATS_AND_NAMES = [("robomimic", "out.hdf5"), ("rlds", "1.2.3"), ("lerobot", "ds")]


class Boom(RuntimeError):
    pass


def _failing(episodes, after: int):
    for i, ep in enumerate(episodes):
        if i == after:
            raise Boom("killed mid-write")
        yield ep


@pytest.mark.parametrize("fmt,name", FORMATS_AND_NAMES, ids=[f for f, _ in FORMATS_AND_NAMES])
def test_a_write_that_dies_midway_leaves_no_destination(tmp_path, make_episode, fmt, name):
    episodes = [make_episode("pusht", seed=i) for i in range(3)]
    dst = str(tmp_path / name)
    with pytest.raises(Boom):
        write_episodes(_failing(episodes, after=2), dst, fmt)
    assert not os.path.exists(dst) and os.listdir(tmp_path) == []
    assert write_episodes(episodes, dst, fmt) == 3  # the re-run is not blocked
    assert [e.episode_id for e in iter_episodes(dst)] == [e.episode_id for e in episodes]
    assert os.listdir(tmp_path) == [name]


def test_a_killed_writes_leftover_does_not_block_the_next(tmp_path, make_episode):
    """What a SIGKILL leaves (the hidden staging copy, half written) is cleared by the re-run."""
    leftover = tmp_path / f".out.hdf5{storage.INCOMPLETE}" / "out.hdf5"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half an HDF5 file")
    dst = str(tmp_path / "out.hdf5")
    assert write_episodes([make_episode("pusht")], dst, "robomimic") == 1
    assert os.listdir(tmp_path) == ["out.hdf5"]


def test_rlds_written_through_staging_keeps_its_version(tmp_path, make_episode):
    dst = str(tmp_path / "ds" / "2.0.1")
    write_episodes([make_episode("pusht")], dst, "rlds")
    info = (tmp_path / "ds" / "2.0.1" / "dataset_info.json").read_text()
    assert '"version": "2.0.1"' in info


def test_a_conversion_that_rejects_every_episode_names_them_and_writes_nothing(
    tmp_path, make_episode, capsys, ray_cluster
):
    src = str(tmp_path / "src.hdf5")
    bad = [make_episode("pusht", seed=i) for i in range(2)]
    write_episodes(bad, src, "robomimic")
    dst = str(tmp_path / "dst")
    code = main(["formats", "convert", src, dst, "--to", "rlds", "--dataset", "robosuite_lift"])
    out = capsys.readouterr().out
    assert code == 1
    assert "read 2 = written 0 + rejected 2" in out and out.count("action dim 2") == 2
    assert not os.path.exists(dst)
    with open(dst + ".rejected.jsonl") as f:
        assert len([line for line in f if line.strip()]) == 2
