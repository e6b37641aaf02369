"""hma-generate never copies or prompts with a bad real episode: it names it, skips it and goes on."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hma.formats import iter_episodes, write_episodes
from hma.generate.config import GenerateConfig
from hma.generate.synthesize import generate
from tests.helpers.generate import build_checkpoint, source_episode
from tests.helpers.threads import one_torch_thread

BAD = {1: "nan", 3: "width"}  # demo index -> what is wrong with its actions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    with one_torch_thread():
        return build_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny"), head_scale=0.6)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """A robomimic file of 6 train episodes whose demos 1 (NaN actions) and 3 (6-D actions in
    a 7-D dataset) were damaged on disk after writing."""
    url = str(tmp_path_factory.mktemp("src") / "lift.hdf5")
    episodes = [source_episode("robosuite_lift", i, 16) for i in range(6)]
    for ep in episodes:
        ep.split = "train"
    write_episodes(episodes, url, "robomimic")
    with h5py.File(url, "a") as f:
        actions = f["data/demo_1/actions"][()]
        actions[3, 2] = np.nan
        f["data/demo_1/actions"][...] = actions
        narrow = f["data/demo_3/actions"][()][:, :6]
        del f["data/demo_3/actions"]
        f["data/demo_3/actions"] = narrow
    return url


def _config(checkpoint: str, source: str, out: str, **kw) -> GenerateConfig:
    base = dict(checkpoint=checkpoint, source=source, out=out, horizon=3, workers=0)
    base |= {"batch_size": 2, "range_tolerance": 3.0, "actions": "replay", "seed": 3}
    return GenerateConfig(**{**base, **kw})


def test_bad_real_episodes_are_skipped_named_and_replaced(checkpoint, source, tmp_path):
    out = str(tmp_path / "mixed.hdf5")
    report = generate(_config(checkpoint, source, out, n=0, mix=4), echo=False)
    written = list(iter_episodes(out))
    assert report.real == 4 and len(written) == 4
    assert all(np.isfinite(ep.actions).all() and ep.actions.shape[1] == 7 for ep in written)
    skipped = {r["episode_id"]: r["reason"] for r in report.skipped_real}
    assert set(skipped) == {ep_id for ep_id in skipped if ep_id.endswith(("real-1", "real-3"))}
    assert skipped, "the seed picks a damaged episode among the first four"
    assert any("non-finite" in r or "action dim 6" in r for r in skipped.values())


def test_bad_prompt_episodes_are_rejected_by_name_and_the_run_goes_on(checkpoint, source, tmp_path):
    out = str(tmp_path / "synthetic.hdf5")
    report = generate(_config(checkpoint, source, out, n=6, mix=0, attempts=4), echo=False)
    prompts = {r["prompt_episode_id"]: r["reason"] for r in report.rejected}
    assert prompts, "some synthetic episode drew a damaged prompt"
    for episode_id, reason in prompts.items():
        assert episode_id.endswith(("real-1", "real-3")) and "prompt episode" in reason
    assert report.synthetic == 6 and report.missing == []


def test_an_s3_destination_with_ray_workers_works_on_the_first_run(
    checkpoint, source, s3_bucket, ray_cluster
):
    """Actors stage episodes on S3 after the driver listed the staging prefix; the driver's
    final read must not trust its cached listing (it said "not found" for a file that exists)."""
    out = f"{s3_bucket}/mixed.hdf5"
    report = generate(_config(checkpoint, source, out, n=2, mix=1, workers=1), echo=False)
    assert (report.real, report.synthetic, report.missing) == (1, 2, [])
    assert len(list(iter_episodes(out))) == 3
