"""Synthetic episodes from a world model with proprioceptive state: the same per-step keys and
dtypes as the real demos of the dataset, minus the fields the model cannot produce (listed)."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest

from hma import storage
from hma.formats import get_format, list_refs, write_episodes
from hma.generate.config import GenerateConfig, GenerateError
from hma.generate.synthesize import generate
from hma.generate.world_model import WorldModel
from tests.helpers.generate import STATE_DIM, constant_classifier, source_episode

# robomimic's proprioception keys, as robosuite demos carry them (widths add up to STATE_DIM)
STATE_KEYS = [["robot0_eef_pos", 3], ["robot0_gripper_qpos", 1]]
N, MIX, HORIZON = 3, 2, 3
NOT_MODELLED = ["object"]  # object poses: an extra of the source demos the model cannot produce


@pytest.fixture(scope="module")
def lift_src(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("src") / "lift.hdf5")
    episodes = []
    for i in range(4):
        ep = source_episode("robosuite_lift", i, 16)
        ep.meta["state_keys"] = STATE_KEYS
        ep.extras["object"] = np.ones((16, 10), np.float32)
        episodes.append(ep)
    write_episodes(episodes, url, "robomimic")
    return url


def reread(url: str) -> list:
    return [get_format(r["format"]).load(r) for r in list_refs(url)]


def run(ckpt: str, src: str, out: str, **fields) -> list:
    config = GenerateConfig(
        checkpoint=ckpt,
        source=src,
        out=out,
        n=N,
        mix=MIX,
        horizon=HORIZON,
        workers=0,
        batch_size=2,
        valid_fraction=0.0,
        range_tolerance=3.0,
        **fields,
    )
    generate(config, echo=False)
    return reread(out)


def per_step_keys(group: h5py.Group) -> dict[str, str]:
    """{path: dtype} of every dataset of one robomimic demo."""
    out: dict[str, str] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            out[name] = str(item.dtype)

    group.visititems(visit)
    return out


def test_synthetic_demos_carry_predicted_state_under_the_real_keys(
    state_checkpoint, lift_src, tmp_path
):
    out = str(tmp_path / "mixed.hdf5")
    synthetic = [e for e in run(state_checkpoint, lift_src, out) if e.meta.get("synthetic")]
    source = {e.episode_id: e for e in reread(lift_src)}
    stride = WorldModel.load(state_checkpoint).stride("robosuite_lift")
    assert len(synthetic) == N
    for e in synthetic:
        assert e.state is not None and e.state.shape == (len(e), STATE_DIM)
        assert np.isfinite(e.state).all()
        assert e.meta["state"].startswith("predicted")
        assert e.meta["state_keys"] == STATE_KEYS
        assert e.meta["absent_fields"] == NOT_MODELLED
        real = source[e.meta["prompt_episode_id"]]
        # the prompt frame's state is the real one; each frame's state is held for its steps
        assert np.array_equal(e.state[0], real.state[0])
        assert np.array_equal(e.state[::stride], e.state[1::stride])
        assert not np.array_equal(e.state[-1], e.state[0])  # predicted, not copied
    with h5py.File(out, "r") as f:
        keys = {
            json.loads(g.attrs["hma_meta"]).get("synthetic", False): per_step_keys(g)
            for g in f["data"].values()
        }
    real_keys, synthetic_keys = keys[False], keys[True]
    absent = {"obs/object", "next_obs/object"}
    assert absent <= set(real_keys) and "obs/robot0_eef_pos" in synthetic_keys
    assert {k: v for k, v in real_keys.items() if k not in absent} == synthetic_keys


def test_without_a_state_model_state_is_absent_and_said(tiny_checkpoint, lift_src, tmp_path):
    episodes = run(tiny_checkpoint, lift_src, str(tmp_path / "plain.hdf5"))
    synthetic = [e for e in episodes if e.meta.get("synthetic")]
    assert synthetic
    for e in synthetic:
        assert e.state is None and e.meta["state"].startswith("none")
        assert e.meta["absent_fields"] == NOT_MODELLED


def test_require_keys_refuses_what_cannot_be_produced(
    state_checkpoint, tiny_checkpoint, lift_src, tmp_path
):
    base = dict(
        source=lift_src, n=2, mix=0, horizon=2, workers=0, batch_size=2, range_tolerance=3.0
    )
    wanted = ["obs/robot0_eef_pos", "robot0_gripper_qpos", "agentview_image", "reward"]
    out = str(tmp_path / "ok.hdf5")
    generate(
        GenerateConfig(checkpoint=state_checkpoint, out=out, require_keys=wanted, **base),
        echo=False,
    )
    assert len(reread(out)) == 2
    cases = [
        (tiny_checkpoint, ["robot0_eef_pos"], "model", "the world model was trained without"),
        (state_checkpoint, ["obs/object"], "model", "the model does not generate it"),
        (state_checkpoint, ["joint_vel"], "model", "the source episodes do not have it"),
    ]
    for ckpt, keys, actions, why in cases:
        out = str(tmp_path / f"refused-{keys[0].replace('/', '_')}.hdf5")
        config = GenerateConfig(
            checkpoint=ckpt, out=out, require_keys=keys, actions=actions, **base
        )
        with pytest.raises(GenerateError, match=re.escape(f"cannot carry '{keys[0]}' ({why}")):
            generate(config, echo=False)
        assert not storage.exists(out)
    out = str(tmp_path / "replay.hdf5")
    config = GenerateConfig(
        checkpoint=tiny_checkpoint, out=out, require_keys=["object"], actions="replay", **base
    )
    generate(config, echo=False)
    assert all("object" in e.extras for e in reread(out))


def test_a_success_classifier_judges_success_and_reward(tiny_checkpoint, lift_src, tmp_path):
    stride = WorldModel.load(tiny_checkpoint).stride("robosuite_lift")
    prompt_frames, hold = 2, 2  # GenerateConfig's default prompt; the classifier's hold rule
    for logit, solved in ((10.0, True), (-10.0, False)):
        clf = str(tmp_path / f"success{logit:+.0f}")
        constant_classifier("robosuite_lift", logit, hold).save(clf)
        out = str(tmp_path / f"judged{logit:+.0f}.hdf5")
        episodes = run(tiny_checkpoint, lift_src, out, success_model=clf)
        synthetic = [e for e in episodes if e.meta.get("synthetic")]
        assert len(synthetic) == N
        for e in synthetic:
            assert e.success is solved and e.meta["success_model"] == clf
            reward = e.extras["reward"]
            # judged on generated frames only: solved at the hold-th one, rewarded from its step
            first = (prompt_frames + hold - 1) * stride if solved else len(e)
            assert not reward[:first].any() and (reward[first:] == 1).all()
    other = str(tmp_path / "tabletop_success")
    constant_classifier("tabletop", 0.0).save(other)
    with pytest.raises(GenerateError, match="judges 'tabletop' episodes; the source"):
        run(tiny_checkpoint, lift_src, str(tmp_path / "refused.hdf5"), success_model=other)
    # replay: the real actions' outcome stands, whatever a classifier would say
    episodes = run(tiny_checkpoint, lift_src, str(tmp_path / "replay.hdf5"), actions="replay")
    source = {e.episode_id: e.success for e in reread(lift_src)}
    for e in (e for e in episodes if e.meta.get("synthetic")):
        assert e.success == source[e.meta["prompt_episode_id"]]
