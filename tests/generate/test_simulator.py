"""The learned simulator: reset/step shapes, the per-step to per-chunk mapping, determinism, the
KV-cached step against the full-history reference, success and time limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hma.generate.simulator import Simulator, SimulatorConfig, SimulatorError
from hma.generate.world_model import WorldModel
from tests.helpers.generate import FRAME, constant_classifier, source_episode

DATASET = "robosuite_lift"  # stride 2, 7-D actions
STRIDE, DIM = 2, 7


@pytest.fixture(scope="module")
def steerable(tiny_checkpoint) -> WorldModel:
    """The tiny model with random (not adaLN-zero) action modulation: untrained, yet its frames
    visibly depend on the actions."""
    wm = WorldModel.load(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in wm.model.blocks:
            if block.modulation is not None:
                w = block.modulation[1].weight
                w.copy_(torch.randn(w.shape, generator=g))
    return wm


def _prompt(batch: int, frames: int = 1) -> np.ndarray:
    from hma.envs.procedural import moving_block_frames

    return np.stack([moving_block_frames(frames, 64, seed=i) for i in range(batch)])


def _chunks(batch: int, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, batch, STRIDE, DIM)).astype(np.float32)


def test_reset_and_step_shapes_per_chunk_and_per_raw_step(world_model):
    sim = Simulator(world_model, DATASET)
    obs = sim.reset(_prompt(3, frames=2), seed=1)
    assert obs["image"].shape == (3, FRAME, FRAME, 3) and obs["image"].dtype == np.uint8
    assert sim.frames == 2 and sim.batch == 3

    obs, reward, done, info = sim.step(_chunks(3, 1)[0])  # a whole chunk [B,s,A]
    assert info["generated"] and sim.frames == 3
    assert obs["image"].shape == (3, FRAME, FRAME, 3)
    assert reward.shape == (3,) and done.shape == (3,) and info["success"].shape == (3,)
    assert not done.any()  # no classifier, no time limit

    before = obs["image"].copy()
    obs, _, _, info = sim.step(np.zeros((3, DIM), np.float32))  # raw step 1 of 2: buffered
    assert not info["generated"] and sim.frames == 3
    np.testing.assert_array_equal(obs["image"], before)  # zero-order hold between kept frames
    obs, _, _, info = sim.step(np.zeros((3, DIM), np.float32))  # raw step 2 of 2: generates
    assert info["generated"] and sim.frames == 4 and info["raw_steps"] == 2 * STRIDE
    assert tuple(sim.tokens().shape[:2]) == (3, 4)


def test_per_step_actions_equal_the_same_chunk(world_model):
    chunk = _chunks(2, 1, seed=3)[0]
    a = Simulator(world_model, DATASET)
    a.reset(_prompt(2), seed=5)
    whole = a.step(chunk)[0]["image"]
    b = Simulator(world_model, DATASET)
    b.reset(_prompt(2), seed=5)
    for k in range(STRIDE):
        obs = b.step(chunk[:, k])[0]
    np.testing.assert_array_equal(obs["image"], whole)


def test_same_seed_same_video_other_seed_differs(world_model):
    def run(seed: int) -> torch.Tensor:
        sim = Simulator(world_model, DATASET, config=SimulatorConfig(temperature=1.0))
        sim.reset(_prompt(2), seed=seed)
        for chunk in _chunks(2, 3):
            sim.step(chunk)
        return sim.tokens()

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.equal(run(0), run(1))


def test_cached_steps_match_the_full_history_reference_past_the_window(world_model):
    window = world_model.model.config.window
    chunks = _chunks(2, window + 3, seed=2)  # well past the window: the cache slides

    def run(use_cache: bool) -> torch.Tensor:
        sim = Simulator(world_model, DATASET, config=SimulatorConfig(use_cache=use_cache))
        sim.reset(_prompt(2, frames=2), actions=_chunks(2, 1, seed=9).transpose(1, 0, 2, 3))
        for chunk in chunks:
            sim.step(chunk)
        return sim.tokens()

    cached, reference = run(True), run(False)
    assert cached.shape[1] == 2 + len(chunks)
    torch.testing.assert_close(cached, reference, rtol=0, atol=0)


def test_first_step_equals_the_models_own_rollout(steerable):
    """One chunk after one prompt frame is exactly WorldModel.rollout_tokens with that chunk:
    same committed context, same masked (not yet chosen) chunk of the new frame, same draws."""
    prompt, chunk = _prompt(2), _chunks(2, 1, seed=4)[0]
    sim = Simulator(steerable, DATASET, config=SimulatorConfig(temperature=1.0))
    sim.reset(prompt, seed=11)
    sim.step(chunk)
    tokens = steerable.encode(prompt[:, 0]).reshape(2, 1, *sim.tokens().shape[2:])
    expected = steerable.rollout_tokens(
        DATASET, tokens, 1, chunk[:, None], temperature=1.0, seed=11
    )
    assert torch.equal(sim.tokens(), expected.tokens.to(sim.tokens().device))


def test_reset_from_real_episodes_uses_their_frames_and_actions(world_model, steerable):
    episodes = [source_episode(DATASET, i, steps=12) for i in range(2)]
    sim = Simulator(world_model, DATASET)
    obs = sim.reset(episodes, prompt_frames=3)
    assert sim.frames == 3 and obs["image"].shape == (2, FRAME, FRAME, 3)
    expected = world_model.encode(episodes[1].frames[[0, 2, 4]])
    assert torch.equal(sim.tokens()[1], expected.to(sim.tokens().device))
    # the prompt's actions condition the next frame: other prompt actions, other video
    other = [source_episode(DATASET, i, steps=12) for i in range(2)]
    for ep in other:
        ep.actions = -ep.actions
    greedy = SimulatorConfig(temperature=0.0)  # untrained logits are near-uniform: take argmax
    a, b = (
        Simulator(steerable, DATASET, config=greedy),
        Simulator(steerable, DATASET, config=greedy),
    )
    a.reset(episodes, prompt_frames=3, seed=0)
    b.reset(other, prompt_frames=3, seed=0)
    chunk = _chunks(2, 1)[0]
    a.step(chunk)
    b.step(chunk)
    assert not torch.equal(a.tokens()[:, -1], b.tokens()[:, -1])


def test_success_classifier_ends_rows_after_hold_frames(world_model):
    sim = Simulator(world_model, DATASET, success=constant_classifier(DATASET, 10.0, hold=2))
    sim.reset(_prompt(2))
    _, reward, done, info = sim.step(_chunks(2, 1)[0])
    assert not done.any() and (info["success_prob"] > 0.99).all()
    _, reward, done, info = sim.step(_chunks(2, 1)[0])
    assert done.all() and info["success"].all() and (reward == 1).all()

    never = Simulator(
        world_model,
        DATASET,
        success=constant_classifier(DATASET, -10.0, hold=2),
        config=SimulatorConfig(max_steps=3 * STRIDE),
    )
    never.reset(_prompt(1))
    dones = [never.step(c)[2][0] for c in _chunks(1, 3)]
    assert dones == [False, False, True]  # the time limit, not success
    assert not never.step(_chunks(1, 1)[0])[3]["success"][0]


def test_user_errors_name_the_problem(world_model):
    sim = Simulator(world_model, DATASET)
    with pytest.raises(SimulatorError, match="reset"):
        sim.step(_chunks(1, 1)[0])
    sim.reset(_prompt(2))
    with pytest.raises(SimulatorError, match=r"\[2, 7\].*\[2, 2, 7\]"):
        sim.step(np.zeros((2, 3), np.float32))
    with pytest.raises(SimulatorError, match="non-finite"):
        sim.step(np.full((2, DIM), np.nan, np.float32))
    assert sim.step(np.zeros((2, STRIDE, DIM), np.float32))[3]["generated"]  # nothing buffered
    with pytest.raises(SimulatorError, match="prompt actions"):
        sim.reset(_prompt(2, frames=2), actions=np.zeros((2, 2, STRIDE, DIM), np.float32))
    with pytest.raises(SimulatorError, match="tabletop"):
        sim.reset([source_episode("tabletop", 0, steps=4)])
    with pytest.raises(SimulatorError, match="judges"):
        Simulator(world_model, "tabletop", success=constant_classifier(DATASET, 0.0, hold=2))
    with pytest.raises(ValueError, match="not trained on 'pusht'"):
        Simulator(world_model, "pusht")


def test_a_model_with_state_reports_the_prompts_state_then_its_prediction(state_checkpoint):
    wm = WorldModel.load(state_checkpoint)
    episodes = [source_episode(DATASET, i, steps=12) for i in range(2)]

    def run(use_cache: bool) -> list[np.ndarray]:
        sim = Simulator(wm, DATASET, config=SimulatorConfig(use_cache=use_cache))
        states = [sim.reset(episodes, prompt_frames=2, seed=3)["state"]]
        for chunk in _chunks(2, wm.model.config.window + 1, seed=5):
            states.append(sim.step(chunk)[0]["state"])
        return states

    cached, reference = run(True), run(False)
    real = np.stack([ep.state[STRIDE] for ep in episodes])  # kept frame 1 = raw step s
    np.testing.assert_allclose(cached[0], real, rtol=1e-5, atol=1e-5)  # normalised round trip
    assert all(s.shape == (2, real.shape[1]) and np.isfinite(s).all() for s in cached)
    assert not np.allclose(cached[-1], cached[0])
    for a, b in zip(cached, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_model_without_state_reports_none(world_model):
    sim = Simulator(world_model, DATASET)
    episodes = [source_episode(DATASET, 0, steps=12)]
    assert "state" not in sim.reset(episodes)
    assert "state" not in sim.step(_chunks(1, 1)[0])[0]
