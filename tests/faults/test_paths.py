"""Paths built from input never leave their root: registry names, writers' paths, RLDS templates."""

from __future__ import annotations

import json

import pytest

from hma import storage
from hma.episodes import Registry, load_registry
from hma.errors import ConfigError, FormatError, UnsafePathError
from hma.formats import rlds

ESCAPE = "../../../escape_ds"


def test_a_registry_dataset_name_that_climbs_out_is_refused_by_file_and_key(tmp_path):
    reg = tmp_path / "mine.yaml"
    reg.write_text(
        f"datasets:\n  '{ESCAPE}':\n    embodiment: arm\n    action_dim: 2\n    hz: 10\n"
        "    camera: top\n    frame_size: [32, 32]\n"
    )
    with pytest.raises(ConfigError, match=rf"{reg}.*'datasets'.*not a safe name"):
        load_registry([str(reg)])


def test_the_rlds_writer_cannot_put_shards_outside_its_destination(tmp_path, make_episode):
    """Even a registry built around validation (model_construct) cannot steer the writer out."""
    spec = load_registry().get("pusht")
    registry = Registry.model_construct(datasets={ESCAPE: spec})
    episode = make_episode("pusht")
    episode.dataset = ESCAPE
    dst = tmp_path / "a" / "b" / "c" / "ds"
    with pytest.raises(UnsafePathError, match="would leave this directory"):
        rlds.write([episode], str(dst), registry)
    outside = [p for p in tmp_path.rglob("*escape_ds*")]
    assert outside == []


def test_the_rlds_reader_refuses_a_file_template_outside_the_dataset(tmp_path, make_episode):
    url = str(tmp_path / "ds")
    rlds.write([make_episode("pusht")], url, load_registry())
    info_path = tmp_path / "ds" / rlds.INFO_FILE
    info = json.loads(info_path.read_text())
    info["splits"][0]["filepathTemplate"] = "../../{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
    info_path.write_text(json.dumps(info))
    with pytest.raises(FormatError, match=rf"{info_path}: filepathTemplate .*would leave"):
        rlds.list_refs(url, None)


def test_child_joins_inside_and_refuses_outside():
    assert storage.child("/data/ds", "videos/a.mp4") == "/data/ds/videos/a.mp4"
    assert storage.child("s3://b/ds", "x/../y") == "s3://b/ds/y"
    for bad in ("../x", "a/../../x", "/etc/passwd", "s3://other/x"):
        with pytest.raises(UnsafePathError):
            storage.child("/data/ds", bad)
