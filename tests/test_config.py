"""Config loading: a bad config names the file, the key and what was expected."""

from __future__ import annotations

import pytest

from hma.config import StrictModel, load_config
from hma.errors import ConfigError


class Inner(StrictModel):
    steps: int
    lr: float = 1e-3


class Job(StrictModel):
    name: str
    inner: Inner


def test_loads_valid_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: run1\ninner:\n  steps: 10\n")
    job = load_config(Job, str(path))
    assert job.inner.steps == 10 and job.inner.lr == 1e-3


def test_wrong_type_names_file_key_and_expectation(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: run1\ninner:\n  steps: lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(Job, str(path))
    msg = str(info.value)
    assert str(path) in msg and "'inner.steps'" in msg and "valid integer" in msg and "lots" in msg


def test_unknown_key_is_an_error_not_ignored(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: run1\ninner:\n  steps: 1\n  stepz: 2\n")
    with pytest.raises(ConfigError, match="inner.stepz"):
        load_config(Job, str(path))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(Job, str(tmp_path / "nope.yaml"))
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, str(path))


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Job, str(path))


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\ninner: {steps: 1}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, str(path))


def test_storage_urls_in_configs_are_made_absolute_for_ray_workers(tmp_path, monkeypatch):
    # Ray Train workers run in their own working directory: a relative path from a config must
    # already point at the driver's file when it reaches them.
    from hma.config import StorageURL, StrictModel

    class Job(StrictModel):
        store: StorageURL
        init_from: StorageURL | None = None

    monkeypatch.chdir(tmp_path)
    job = Job(store="out/store.zarr", init_from="s3://bucket/run")
    assert job.store == str(tmp_path / "out" / "store.zarr")
    assert job.init_from == "s3://bucket/run"
    assert Job(store="file:///data/x").store == "/data/x"
