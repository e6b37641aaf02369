"""Proprioceptive state in the model: shapes, routing, causality, hiding and rollouts."""

from __future__ import annotations

import torch

from hma.model import HMA
from hma.model.masking import sample_masks
from tests.helpers.model import STATES, random_batch, tiny


def state_model(seed: int = 0) -> HMA:
    torch.manual_seed(seed)
    return HMA(tiny(states=dict(STATES))).eval()


def test_state_prediction_shapes_and_rows_without_state():
    model = state_model()
    batch = random_batch(model.config, rows=4)
    out = model(batch.tokens, batch.actions, batch.datasets, state=batch.state)
    b, t = batch.tokens.shape[:2]
    assert out.state is not None and out.state.shape == (b, t, model.config.state_width)
    pusher = [i for i, d in enumerate(batch.datasets) if d == "pusher"]
    assert (out.state[pusher] == 0).all()  # no state head for the pusher
    losses = model.loss(batch, "forward")
    assert losses["state"] > 0
    losses["total"].backward()
    assert model.states.heads["arm"].weight.grad.abs().sum() > 0


def test_a_model_without_state_has_no_state_parameters():
    model = HMA(tiny())  # the layout older checkpoints were saved with
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.startswith("states.") or n == "state_mask_token"]
    batch = random_batch(model.config)
    assert model(batch.tokens, batch.actions, batch.datasets).state is None
    assert float(model.loss(batch, "forward")["state"].detach()) == 0.0


def test_future_state_does_not_reach_the_past():
    model = state_model()
    batch = random_batch(model.config, rows=2)
    changed = batch.state.clone()
    changed[:, -1] += 5.0  # only the last frame's state
    a = model(batch.tokens, batch.actions, batch.datasets, state=batch.state)
    b = model(batch.tokens, batch.actions, batch.datasets, state=changed)
    assert torch.allclose(a.video[:, :-1], b.video[:, :-1], atol=1e-6)
    assert torch.allclose(a.state[:, :-1], b.state[:, :-1], atol=1e-6)
    assert not torch.allclose(a.video[:, -1], b.video[:, -1])  # it does condition its frame


def test_a_frame_with_masked_video_hides_its_state():
    model = state_model()
    batch = random_batch(model.config, rows=2)
    b, t, s = batch.tokens.shape[0], batch.tokens.shape[1], model.config.tokens_per_frame
    video_mask = torch.zeros(b, t, s, dtype=torch.bool)
    video_mask[:, -1, 0] = True  # one masked token: the frame's state is unknown
    changed = batch.state.clone()
    changed[:, -1] += 5.0
    kwargs = {"video_mask": video_mask}
    a = model(batch.tokens, batch.actions, batch.datasets, state=batch.state, **kwargs)
    c = model(batch.tokens, batch.actions, batch.datasets, state=changed, **kwargs)
    assert torch.equal(a.video, c.video) and torch.equal(a.state, c.state)


def test_state_loss_counts_only_hidden_frames_of_rows_with_state():
    model = state_model()
    batch = random_batch(model.config, rows=4)
    masks = sample_masks(
        "forward",
        4,
        model.config.window,
        model.config.tokens_per_frame,
        model.config.masking,
        torch.device("cpu"),
        torch.Generator().manual_seed(1),
    )
    base = model.loss(batch, "forward", masks=masks)["state"]
    pusher = [i for i, d in enumerate(batch.datasets) if d == "pusher"]
    shown = ~masks.video.any(-1)  # frames whose state is given
    noisy = batch.state.clone()
    noisy[pusher] += 100.0  # padding of rows without state: never scored
    batch.state = noisy
    assert torch.isclose(model.loss(batch, "forward", masks=masks)["state"], base)
    assert shown.any()


def test_rollout_predicts_state_and_the_cache_matches_recomputation():
    model = state_model()
    batch = random_batch(model.config, rows=2, frames=2)
    batch.datasets = ["arm", "arm"]
    prompt_state = batch.state[:, :1].clone()
    prompt_state[:, :, STATES["arm"] :] = 0
    actions = batch.actions[:, :1].repeat(1, 6, 1)
    kwargs = {"horizon": 5, "mode": "forward", "prompt_state": prompt_state}
    cached = model.rollout(
        batch.tokens[:, :1],
        actions,
        batch.datasets,
        **kwargs,
        generator=torch.Generator().manual_seed(0),
    )
    full = model.rollout(
        batch.tokens[:, :1],
        actions,
        batch.datasets,
        **kwargs,
        generator=torch.Generator().manual_seed(0),
        use_cache=False,
    )
    assert cached.state.shape == (2, 6, model.config.state_width)
    assert torch.equal(cached.state[:, :1], prompt_state)
    assert cached.state[:, 1:].abs().sum() > 0  # predicted for every new frame
    assert torch.equal(cached.tokens, full.tokens)
    assert torch.allclose(cached.state, full.state, atol=1e-5)
