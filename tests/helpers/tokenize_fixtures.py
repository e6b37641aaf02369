"""Sources, tokenizers and the expected store content shared by the tokenize-job tests.

The expected content is computed without Ray: load every source episode in this process, keep
every stride-th frame (and its state), resize, encode with the same checkpoint. A store made by
the pipeline
(however it was interrupted) must hold exactly that, once per episode.
"""

from __future__ import annotations

import os

import numpy as np

from hma import formats
from hma.envs.procedural import procedural_episodes
from hma.episodes import chunk_actions, keep_frames, load_registry
from hma.frames import resize
from hma.pipeline.store.reader import TokenStore
from hma.stats import ActionStats
from hma.tokenize.checkpoint import build_tokenizer, load_tokenizer, save_tokenizer
from hma.tokenize.presets import fsq, kl

SIZE = 64  # job frame size; the tiny tokenizers downsample by 8 -> 8 x 8 tokens


def save_tiny_tokenizer(arch: str, url: str, preset: str = "tiny") -> str:
    torch_seed()
    config = fsq(preset) if arch == "fsq" else kl(preset)
    save_tokenizer(build_tokenizer(config), url)
    return url


def torch_seed() -> None:
    import torch

    torch.manual_seed(0)


def write_mixed_sources(root: str) -> list[dict]:
    """One small source per format; strides 1 (pusht, tabletop), 2 (lift) and 8 (metaworld).
    Frames of the robomimic source are 48 px, so the resize stage has work to do."""
    specs = [
        ("video", "pusht", 5, 12, SIZE, "pusht"),
        ("robomimic", "robosuite_lift", 4, 12, 48, "lift.hdf5"),
        ("rlds", "tabletop", 3, 10, SIZE, "tabletop"),
        ("lerobot", "metaworld_reach", 3, 20, SIZE, "reach"),
    ]
    sources = []
    for seed, (fmt, dataset, count, steps, size, name) in enumerate(specs):
        episodes = procedural_episodes(dataset, count, steps, size, seed)
        episodes[-1].split = "val"
        url = os.path.join(root, name)
        formats.write_episodes(episodes, url, fmt)
        sources.append({"url": url, "format": fmt})
    return sources


def write_video_source(url: str, dataset: str = "pusht", count: int = 6, steps: int = 8) -> dict:
    formats.write_episodes(procedural_episodes(dataset, count, steps, SIZE, 7), url, "video")
    return {"url": url, "format": "video"}


def expected_content(sources: list[dict], checkpoint: str) -> dict[tuple[str, str], dict]:
    """{(dataset, episode_id): {"tokens", "actions", "state", "split"}} as the store must hold it
    (state [F,0] for an episode without)."""
    registry = load_registry()
    tokenizer = load_tokenizer(checkpoint)
    out = {}
    for source in sources:
        for ep in formats.iter_episodes(source["url"], source.get("format"), source.get("dataset")):
            stride = registry.get(ep.dataset).stride
            kept = keep_frames(len(ep), stride)
            frames = resize(ep.frames[kept], (SIZE, SIZE))
            state = ep.state if ep.state is not None else np.zeros((len(ep), 0), np.float32)
            out[(ep.dataset, ep.episode_id)] = {
                "tokens": tokenizer.encode(frames).numpy(),
                "actions": chunk_actions(ep.actions, stride),
                "state": state[kept],
                "split": ep.split,
            }
    return out


def store_content(url: str) -> dict[tuple[str, str], dict]:
    """Every committed episode of the store; fails on an episode stored twice."""
    ts = TokenStore.open(url)
    out = {}
    for name in ts.datasets:
        view = ts.dataset(name)
        for i, episode_id in enumerate(view.episode_ids):
            assert (name, episode_id) not in out, f"{name}/{episode_id} stored twice"
            tokens, actions = ts.read_episode(name, i)
            state = ts.read_state(name, i, 0, len(tokens))
            out[(name, episode_id)] = {
                "tokens": tokens,
                "actions": actions,
                "state": state,
                "split": view.split[i],
            }
    return out


def assert_store_matches(url: str, expected: dict[tuple[str, str], dict], kind: str) -> None:
    """The store holds exactly the expected episodes, tokens (vq exact, soft to float16), actions
    and state, and per-dataset train stats over exactly those actions."""
    got = store_content(url)
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        have = got[key]
        assert have["split"] == want["split"], key
        np.testing.assert_array_equal(have["actions"], want["actions"], err_msg=str(key))
        np.testing.assert_array_equal(have["state"], want["state"], err_msg=str(key))
        if kind == "vq":
            np.testing.assert_array_equal(have["tokens"], want["tokens"], err_msg=str(key))
        else:
            np.testing.assert_allclose(have["tokens"], want["tokens"], rtol=2e-3, atol=2e-3)
    ts = TokenStore.open(url)
    for name in ts.datasets:
        train = [
            w["actions"].reshape(-1, w["actions"].shape[-1])
            for (d, _), w in expected.items()
            if d == name and w["split"] == "train"
        ]
        want = ActionStats.of(np.concatenate(train))
        stats = ts.dataset(name).stats
        assert stats.count == want.count
        np.testing.assert_allclose(stats.mean, want.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats.std, want.std, rtol=1e-9, atol=1e-12)
