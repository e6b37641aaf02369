"""Pretraining pieces without Ray: mixing weights, the resumable sampling stream, collate, prefetch,
accumulation, and a checkpoint round trip that resumes a step-for-step identical loss curve."""

from __future__ import annotations

import os

import pytest
import torch

from hma import checkpoint
from hma.model import checkpoint as ckpt
from hma.model.hma import HMA
from hma.pipeline.pretrain.config import PretrainConfig
from hma.pipeline.pretrain.driver import plan
from hma.pipeline.pretrain.mixing import (
    MixConfig,
    MixedSource,
    Prefetcher,
    SamplingStream,
    StreamState,
    mixing_weights,
)
from hma.pipeline.pretrain.step import (
    load_states,
    make_state,
    model_state,
    optimizer_state,
    train_step,
)
from tests.helpers.pretrain_data import tiny_config, tokenizer_info, write_store
from tests.helpers.tokenize_fixtures import save_tiny_tokenizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("units")
    info = tokenizer_info(save_tiny_tokenizer("fsq", str(root / "tok")))
    return write_store(str(root / "s.zarr"), info, {"pusht": 6, "robosuite_lift": 2})


def test_mixing_weights_follow_the_temperature_rule():
    counts = {"big": 900, "small": 100}
    w = mixing_weights(counts, {"big": 3.0, "small": 3.0})
    ratio = (0.9 / 0.1) ** (1 / 3)
    assert w["big"] / w["small"] == pytest.approx(ratio)
    assert sum(w.values()) == pytest.approx(1.0)
    assert mixing_weights(counts, {"big": 1.0, "small": 1.0}) == pytest.approx(
        {"big": 0.9, "small": 0.1}
    )
    # per-dataset tau: a huge tau flattens that dataset's share towards (n/N)^0 = 1
    w = mixing_weights(counts, {"big": 1.0, "small": 1e9})
    assert w["small"] == pytest.approx(1 / 1.9, rel=1e-6)


def test_source_counts_windows_and_applies_per_dataset_temperature(store):
    config = MixConfig(stores=[{"url": store}], temperatures={"pusht": 1.0})
    source = MixedSource(config, window=4)
    assert source.counts == {"pusht": 6 * 7, "robosuite_lift": 2 * 7}  # 10 frames, T=4
    assert source.temperatures == {"pusht": 1.0, "robosuite_lift": 3.0}
    assert source.widths == {"pusht": 2, "robosuite_lift": 14}
    with pytest.raises(ValueError, match="not in the mix"):
        MixedSource(MixConfig(stores=[{"url": store}], temperatures={"nope": 1.0}), window=4)


def test_stream_is_deterministic_sharded_and_resumable(store):
    source = MixedSource(MixConfig(stores=[{"url": store}]), window=4)

    def stream(rank, world, position=0):
        return SamplingStream(source, 6, 14, StreamState(0, rank, world, position))

    one = stream(0, 1)
    a, b = one.batch(0), one.batch(0)
    assert torch.equal(a.tokens, b.tokens) and a.datasets == b.datasets
    # two workers read the even and odd micro-batches of the one-worker stream
    r0, r1 = stream(0, 2), stream(1, 2)
    assert torch.equal(r0.batch(1).tokens, one.batch(2).tokens)
    assert torch.equal(r1.batch(1).tokens, one.batch(3).tokens)
    # actions are zero-padded past each row's dataset width, and mixed batches happen
    rows = [one.batch(i) for i in range(8)]
    assert any(len(set(r.datasets)) == 2 for r in rows)
    for r in rows:
        for i, name in enumerate(r.datasets):
            if name == "pusht":
                assert not r.actions[i, :, 2:].any()
    # a resumed prefetcher continues at the saved position
    with one.prefetch(2) as it:
        first = [next(it) for _ in range(3)]
        assert it.position == 3
    with stream(0, 1, position=2).prefetch(2) as it:
        assert torch.equal(next(it).tokens, first[2].tokens)
    state = StreamState(0, 0, 2, 5).resumed(1, 1)
    assert (state.rank, state.world, state.position) == (1, 1, 10)


def test_prefetcher_raises_the_producers_error_in_order():
    def produce(i):
        if i == 3:
            raise KeyError("boom")
        return i

    with Prefetcher(produce, 0, 2) as it:
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError, match="boom"):
            next(it)


def _setup(store, tmp_path, **overrides):
    config = PretrainConfig.model_validate(
        tiny_config([store], str(tmp_path), "u", num_workers=1, **overrides)
    )
    decided = plan(config)
    torch.manual_seed(config.seed)
    state = make_state(HMA(decided.model), config.optim, config.decay_steps, "ddp", CPU)
    source = MixedSource(config.data, decided.model.window)
    return config, decided, state, source


def test_checkpoint_round_trip_resumes_the_same_losses(store, tmp_path):
    config, decided, state, source = _setup(store, tmp_path, modes={"forward": 0.5, "full": 0.5})
    stream = SamplingStream(source, 4, decided.model.action_width, StreamState(0, 0, 1))
    losses = [
        train_step(state, [stream.batch(i)], config.step_config, 0, 0)["loss"] for i in (0, 1)
    ]
    url = str(tmp_path / "ckpt")
    ckpt.save_run(
        url,
        model_state(state),
        decided.model.model_dump(mode="json"),
        {
            "optimizer": optimizer_state(state),
            "scheduler": state.scheduler.state_dict(),
            "rng": {"0": checkpoint.rng_state()},
        },
        {**decided.meta, "step": state.step, "seconds": 0.0, "sampler": {}},
    )
    after = [train_step(state, [stream.batch(i)], config.step_config, 0, 0)["loss"] for i in (2, 3)]

    _, _, fresh, _ = _setup(store, tmp_path, modes={"forward": 0.5, "full": 0.5})
    saved = checkpoint.load_state(url)
    from safetensors.torch import load_file

    load_states(
        fresh, load_file(os.path.join(ckpt.model_url(url), "model.safetensors")), saved["optimizer"]
    )
    fresh.scheduler.load_state_dict(saved["scheduler"])
    fresh.step = ckpt.read_meta(url)["step"]
    checkpoint.set_rng_state(saved["rng"]["0"])
    again = [train_step(fresh, [stream.batch(i)], config.step_config, 0, 0)["loss"] for i in (2, 3)]
    assert again == pytest.approx(after, rel=1e-6, abs=1e-7)
    assert losses != after
    assert ckpt.latest(str(tmp_path)) is None and ckpt.resolve(url) == url


def test_accumulation_averages_the_micro_batch_losses(store, tmp_path):
    from hma.pipeline.pretrain.step import step_seed

    config, decided, acc, source = _setup(store, tmp_path)
    stream = SamplingStream(source, 4, decided.model.action_width, StreamState(0, 0, 1))
    micro = [stream.batch(0), stream.batch(1)]
    train_step(acc, micro, config.step_config.model_copy(update={"grad_accum": 2}), 0, 0)
    _, _, ref, _ = _setup(store, tmp_path)
    for i, mb in enumerate(micro):  # by hand: the mean of the two losses, one optimizer step
        torch.manual_seed(step_seed(0, 0, 0, i))
        (ref.runner(mb.tokens, mb.actions, mb.datasets, "forward")["total"] / 2).backward()
    torch.nn.utils.clip_grad_norm_(ref.root.parameters(), config.optim.grad_clip)
    ref.optimizer.step()
    for (name, p), q in zip(acc.model.named_parameters(), ref.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_the_model_takes_state_widths_from_the_store_unless_told_not_to(store, tmp_path):
    with_state = plan(PretrainConfig.model_validate(tiny_config([store], str(tmp_path), "s")))
    assert with_state.model.states == {"robosuite_lift": 3}
    lift = with_state.meta["datasets"]["robosuite_lift"]
    assert lift["state_dim"] == 3 and len(lift["state_stats"]["std"]) == 3
    config = tiny_config([store], str(tmp_path), "v", state=False)
    without = plan(PretrainConfig.model_validate(config))
    assert (
        without.model.states == {} and without.meta["datasets"]["robosuite_lift"]["state_dim"] == 0
    )


def test_batches_carry_normalised_state_padded_for_rows_without_it(store):
    source = MixedSource(MixConfig(stores=[{"url": store}], batch_size=6), 4)
    stream = SamplingStream(source, 6, 14, StreamState(seed=0, rank=0, world=1), state_width=3)
    batch = stream.batch(0)
    assert batch.state is not None and batch.state.shape == (6, 4, 3)
    for row, name in enumerate(batch.datasets):
        if name == "pusht":
            assert (batch.state[row] == 0).all()
    assert (
        SamplingStream(source, 6, 14, StreamState(seed=0, rank=0, world=1)).batch(0).state is None
    )
