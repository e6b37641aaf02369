"""`hma tokenize` refuses or quarantines bad input before it can damage a store: the same source
listed twice, the same episode in two sources, a store URL that is other data, damaged tokenizer
weights, a frame size the tokenizer cannot grid. Each refusal is one line naming the culprit."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml
from safetensors.torch import load_file, save_file

from hma import formats
from hma.cli import main
from hma.envs.procedural import procedural_episodes
from hma.pipeline.store.reader import TokenStore
from hma.pipeline.tokenize_job import TokenizeJobConfig, run_tokenize
from hma.tokenize.checkpoint import WEIGHTS_FILE
from tests.helpers.tokenize_fixtures import save_tiny_tokenizer

FAST = {"episodes_per_unit": 2, "progress": False, "write_cpus": 0.25, "load_cpus": 0.5}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenize-faults")


@pytest.fixture(scope="module")
def tokenizer(workdir) -> str:
    return save_tiny_tokenizer("fsq", str(workdir / "fsq"))


@pytest.fixture(scope="module")
def source(workdir) -> str:
    url = str(workdir / "pusht.hdf5")
    formats.write_episodes(procedural_episodes("pusht", 4, 6, 64, 0), url, "robomimic")
    return url


def _spec(path, **fields) -> str:
    spec = path / "job.yaml"
    spec.write_text(yaml.safe_dump({"kind": "tokenize", "progress": False, **fields}))
    return str(spec)


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("hma: error: ")
    return err[0]


def test_a_source_listed_twice_is_read_once_and_a_copied_episode_is_quarantined(
    ray_cluster, workdir, tokenizer, source
):
    copy = str(workdir / "pusht_copy.hdf5")
    shutil.copy(source, copy)
    url = str(workdir / "dups.zarr")
    sources = [{"url": source}, {"url": source}, {"url": copy}]
    config = TokenizeJobConfig(sources=sources, tokenizer=tokenizer, store=url, **FAST)
    summary = run_tokenize(config)
    assert summary.ok, summary.lines()
    assert summary.repeated_sources == [source]
    assert any(f"source {source} is listed more than once" in line for line in summary.lines())
    counts = summary.datasets["pusht"]
    assert (counts.read, counts.committed, counts.quarantined) == (8, 4, 4)
    assert summary.reasons == {"duplicate episode": 4}
    assert len(TokenStore.open(url).dataset("pusht")) == 4
    # a later run with a third copy: its episodes are in the store's committed units already
    third = str(workdir / "pusht_third.hdf5")
    shutil.copy(source, third)
    again = run_tokenize(
        TokenizeJobConfig(sources=[{"url": third}], tokenizer=tokenizer, store=url, **FAST)
    )
    assert again.ok and again.reasons == {"duplicate episode": 4}
    assert len(TokenStore.open(url).dataset("pusht")) == 4


def test_a_store_url_that_is_a_dataset_directory_or_a_file_is_refused(
    ray_cluster, workdir, tokenizer, source, capsys
):
    dataset_dir = workdir / "some_dataset"
    formats.write_episodes(procedural_episodes("pusht", 2, 4, 64, 1), str(dataset_dir), "rlds")
    before = sorted(os.listdir(dataset_dir))
    spec = _spec(workdir, sources=[{"url": source}], tokenizer=tokenizer, store=str(dataset_dir))
    assert main(["tokenize", "--config", spec]) == 2
    assert f"{dataset_dir}: an existing directory that is not a token store" in _one_error_line(
        capsys
    )
    assert sorted(os.listdir(dataset_dir)) == before
    spec = _spec(workdir, sources=[{"url": source}], tokenizer=tokenizer, store=source)
    assert main(["tokenize", "--config", spec]) == 2
    assert f"{source}: is a file, not a token store" in _one_error_line(capsys)


def test_damaged_tokenizer_weights_are_one_line_from_the_driver(
    ray_cluster, workdir, source, capsys
):
    bad = save_tiny_tokenizer("fsq", str(workdir / "bad_fsq"))
    weights = os.path.join(bad, WEIGHTS_FILE)
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1  # same names, shapes and header: only the values differ
    save_file(tensors, weights, metadata={"format": "hma-tokenizer"})
    url = workdir / "never.zarr"
    spec = _spec(workdir, sources=[{"url": source}], tokenizer=bad, store=str(url))
    assert main(["tokenize", "--config", spec]) == 2
    line = _one_error_line(capsys)
    assert f"{weights}: weights do not match the fingerprint" in line
    assert not url.exists()  # nothing is created before the inputs are verified


def test_a_frame_size_the_tokenizer_cannot_grid_is_one_line(
    ray_cluster, workdir, tokenizer, source, capsys
):
    url = workdir / "never2.zarr"
    spec = _spec(
        workdir,
        sources=[{"url": source}],
        tokenizer=tokenizer,
        store=str(url),
        frame_size=[60, 60],
    )
    assert main(["tokenize", "--config", spec]) == 2
    assert "frame size 60x60 is not a multiple" in _one_error_line(capsys)
    assert not url.exists()
