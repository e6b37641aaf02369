"""hma-generate: mixed real + synthetic datasets reread with the project's readers.

Real files in both formats (robomimic HDF5, Language Table RLDS), a tiny untrained checkpoint
(conftest.py), 64 px source frames and 32 px model frames, short horizons.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from hma import storage
from hma.cli import generate_main
from hma.episodes import load_registry
from hma.formats import get_format, list_refs, write_episodes
from hma.generate import synthetic as syn
from hma.generate.batch_runner import BatchRunner
from hma.generate.config import GenerateConfig, GenerateError
from hma.generate.synthesize import batches, generate, make_plan
from hma.generate.world_model import WorldModel, WorldModelError
from hma.stats import ActionStats
from tests.helpers.generate import build_checkpoint, source_episode

N, MIX = 5, 2


@pytest.fixture(scope="module")
def lift_src(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("src") / "lift.hdf5")
    write_episodes((source_episode("robosuite_lift", i, 16) for i in range(6)), url, "robomimic")
    return url


@pytest.fixture(scope="module")
def table_src(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("src") / "lt_rlds")
    write_episodes((source_episode("tabletop", i, 10) for i in range(6)), url, "rlds")
    return url


def config(ckpt: str, src: str, out: str, **kw) -> GenerateConfig:
    """Small runs. The untrained model's proposals drift out of the real range within a few
    frames, so the range check gets a wide tolerance here; test_out_of_range_* tightens it."""
    base = dict(checkpoint=ckpt, source=src, out=out, n=N, mix=MIX, horizon=3, workers=0)
    base |= {"batch_size": 2, "valid_fraction": 0.2, "range_tolerance": 3.0}
    return GenerateConfig(**{**base, **kw})


def reread(url: str) -> list:
    refs = list_refs(url)
    return [get_format(r["format"]).load(r) for r in refs]


def test_robomimic_mix_counts_provenance_splits(tiny_checkpoint, lift_src, tmp_path):
    out = str(tmp_path / "mixed.hdf5")
    report = generate(config(tiny_checkpoint, lift_src, out), echo=False)
    assert (report.real, report.synthetic, report.missing) == (MIX, N, [])
    episodes = reread(out)
    assert len(episodes) == N + MIX
    synthetic = [e for e in episodes if e.meta.get("synthetic")]
    real = [e for e in episodes if not e.meta.get("synthetic")]
    assert len(synthetic) == N and len(real) == MIX
    wm = WorldModel.load(tiny_checkpoint)
    source = {e.episode_id: e for e in reread(lift_src)}
    for e in real:  # copied unchanged
        src = source[e.episode_id]
        assert np.array_equal(e.frames, src.frames) and np.array_equal(e.actions, src.actions)
        assert e.split == "train" and e.meta == src.meta
    for e in synthetic:
        m = e.meta
        assert m["checkpoint_fingerprint"] == wm.fingerprint
        assert m["tokenizer_fingerprint"] == wm.tokenizer_fingerprint
        assert m["seed"] == 0 and m["actions"] == "model" and m["prompt_episode_id"] in source
        # 2 prompt + 3 new kept frames, each held for stride 2 raw steps, at the source's 64 px
        assert e.frames.shape == (10, 64, 64, 3) and e.actions.shape == (10, 7)
        assert np.array_equal(e.frames[0::2], e.frames[1::2])
        assert np.isfinite(e.actions).all() and e.success is None
    assert sorted(e.split for e in synthetic).count("val") == 1  # valid_fraction 0.2 of 5
    with h5py.File(out, "r") as f:
        assert len(f["mask/train"]) == N + MIX - 1 and len(f["mask/valid"]) == 1
        masks = {k: {x.decode() for x in f[f"mask/{k}"][()]} for k in f["mask"]}
        kind = {
            d: json.loads(g.attrs["hma_meta"]).get("synthetic", False) for d, g in f["data"].items()
        }
        env_args = json.loads(f["data"].attrs["env_args"])
    # filter keys by provenance, so robomimic's hdf5_filter_key trains on either kind alone
    assert (
        masks["synthetic"] == {d for d, synth in kind.items() if synth}
        and len(masks["real"]) == MIX
    )
    assert (
        masks["real"] | masks["synthetic"] == set(kind) and not masks["real"] & masks["synthetic"]
    )
    for k in ("real", "synthetic"):
        assert masks[f"{k}_train"] == masks[k] & masks["train"]
        assert masks[f"{k}_valid"] == masks[k] & masks["valid"]
    assert len(masks["synthetic_valid"]) == 1 and not masks["real_valid"]
    assert env_args["env_name"] == "Lift"  # robomimic can still build the env
    assert not storage.exists(syn.staging_url(out))


def test_rlds_ray_workers_match_in_process_and_seed(
    tiny_checkpoint, table_src, tmp_path, ray_cluster
):
    runs = {}
    for name, kw in {"local": {}, "ray": {"workers": 2}, "seed1": {"seed": 1}}.items():
        out = str(tmp_path / name)
        generate(config(tiny_checkpoint, table_src, out, actions="perturb", **kw), echo=False)
        runs[name] = {e.episode_id: e for e in reread(out)}
    local, ray_run, other = runs["local"], runs["ray"], runs["seed1"]
    assert len(local) == N + MIX and local.keys() == ray_run.keys()
    for key, e in local.items():
        assert np.array_equal(e.frames, ray_run[key].frames)
        assert np.array_equal(e.actions, ray_run[key].actions)
        assert e.meta == ray_run[key].meta
    synthetic = [e for e in local.values() if e.meta.get("synthetic")]
    assert len(synthetic) == N and all(e.meta["actions"] == "perturb" for e in synthetic)
    # RLDS needs one step schema: state and extras are zero placeholders, and say so
    assert all(e.meta["placeholder_fields"] for e in synthetic)
    assert all(not e.state.any() for e in synthetic)
    assert {e.split for e in local.values()} == {"train", "val"}
    other_synth = [e for e in other.values() if e.meta.get("synthetic")]
    pairs = zip(synthetic, other_synth, strict=True)
    assert any(not np.array_equal(a.actions, b.actions) for a, b in pairs)


def test_replay_keeps_real_actions_and_states(tiny_checkpoint, lift_src, tmp_path):
    out = str(tmp_path / "replay.hdf5")
    generate(config(tiny_checkpoint, lift_src, out, actions="replay", mix=0, n=2), echo=False)
    source = {e.episode_id: e for e in reread(lift_src)}
    for e in reread(out):
        real = source[e.meta["prompt_episode_id"]]
        steps = len(e)
        assert np.array_equal(e.actions, real.actions[:steps])
        assert np.array_equal(e.state, real.state[:steps])


def test_resume_after_interruption(tiny_checkpoint, lift_src, tmp_path):
    full = str(tmp_path / "full.hdf5")
    generate(config(tiny_checkpoint, lift_src, full), echo=False)
    out = str(tmp_path / "resumed.hdf5")
    c = config(tiny_checkpoint, lift_src, out)
    # an interrupted run: the plan recorded and one batch staged, then the process died
    plan = make_plan(c, WorldModel.load(tiny_checkpoint))
    root = syn.staging_url(out)
    syn.check_run_record(root, plan.run)
    job = batches(c, plan, {}, [])[0]
    BatchRunner(c.model_dump(), plan.fmt, plan.provenance.__dict__).run(job)
    report = generate(c, echo=False)
    assert report.resumed == 2 and report.synthetic == N
    a, b = reread(full), reread(out)
    assert [e.episode_id for e in a] == [e.episode_id for e in b]
    assert len({e.episode_id for e in b}) == N + MIX
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b, strict=True))
    # a staged run is resumed only with the settings that started it
    syn.check_run_record(syn.staging_url(str(tmp_path / "x.hdf5")), plan.run)
    with pytest.raises(Exception, match="other settings.*seed"):
        generate(config(tiny_checkpoint, lift_src, str(tmp_path / "x.hdf5"), seed=3), echo=False)


def test_refuses_mismatched_tokenizer_dataset_checkpoint(tiny_checkpoint, tmp_path, lift_src):
    other = build_checkpoint(str(tmp_path / "other"), head_scale=0.5, seed=1)
    with pytest.raises(WorldModelError, match="tokenizer mismatch.*fingerprint"):
        WorldModel.load(tiny_checkpoint, tokenizer=f"{other}/tokenizer")
    pusht = str(tmp_path / "pusht.hdf5")
    ep = source_episode("tabletop", 0, 8)
    ep.dataset = "pusht"
    write_episodes([ep], pusht, "robomimic")
    with pytest.raises(WorldModelError, match="dataset mismatch.*'pusht'"):
        generate(config(tiny_checkpoint, pusht, str(tmp_path / "o.hdf5"), mix=0), echo=False)
    with pytest.raises(Exception, match="not a pretraining checkpoint"):
        generate(config(str(tmp_path), lift_src, str(tmp_path / "o.hdf5")), echo=False)
    with pytest.raises(GenerateError, match="destination exists"):
        generate(config(tiny_checkpoint, lift_src, lift_src), echo=False)


def test_collapsed_actions_are_refused_not_written(collapsed_checkpoint, lift_src, tmp_path):
    out = str(tmp_path / "collapsed.hdf5")
    with pytest.raises(
        GenerateError, match=r"collapsed.*dim 0: std \S+ vs real \S+ \(\d+% of it\)"
    ):
        generate(config(collapsed_checkpoint, lift_src, out, n=2, mix=0), echo=False)
    assert not storage.exists(out)


def test_out_of_range_episodes_are_reported_retried_not_written(
    tiny_checkpoint, lift_src, tmp_path
):
    out = str(tmp_path / "strict.hdf5")
    c = config(tiny_checkpoint, lift_src, out, mix=0, n=4, range_tolerance=0.3, attempts=2)
    report = generate(c, echo=False)
    assert report.rejected and all("outside the real range" in r["reason"] for r in report.rejected)
    stats = WorldModel.load(tiny_checkpoint).stats("robosuite_lift")
    written = reread(out)
    assert len(written) == report.synthetic == 4 - len(report.missing)
    lo, hi = syn.actions_range(stats, 0.3)
    for e in written:  # only episodes inside the (widened) real per-dimension range were written
        assert (e.actions >= lo).all() and (e.actions <= hi).all()
    retried = {r["index"] for r in report.rejected if r["attempt"] == 0}
    assert retried <= {r["index"] for r in report.rejected if r["attempt"] == 1} | {
        e.meta["index"] for e in written if e.meta["attempt"] == 1
    }
    assert not {e.meta["index"] for e in written} & set(report.missing)


def test_out_of_range_actions_are_rejected():
    stats = ActionStats.of(np.array([[-1.0, 0.0], [1.0, 0.1]]))
    ep = source_episode("tabletop", 0, 4)
    ep.actions[:] = [[0.5, 0.05]]
    ep.actions[2, 1] = 0.109  # the real dim-1 range is [0, 0.1]; 10% slack ends at 0.11
    assert syn.check_episode(ep, True, stats, 0.1, load_registry()) is None
    ep.actions[2, 1] = 0.12
    assert "action dim 1" in syn.check_episode(ep, True, stats, 0.1, load_registry())
    assert "non-finite" in syn.check_episode(ep, False, stats, 0.1, load_registry())


def test_cli_writes_and_reports(tiny_checkpoint, lift_src, tmp_path, capsys):
    out = str(tmp_path / "cli.hdf5")
    argv = ["--checkpoint", tiny_checkpoint, "--dataset", lift_src, "--out", out]
    argv += ["--n", "2", "--mix", "1", "--horizon", "2", "--workers", "0", "--quiet"]
    assert generate_main(argv) == 0
    assert "1 real + 2 synthetic" in capsys.readouterr().out
    assert generate_main(argv) == 2  # exists now
    assert "destination exists" in capsys.readouterr().err


def test_s3_destination_with_staging_on_s3(tiny_checkpoint, lift_src, s3_bucket):
    out = f"{s3_bucket}/mixed.hdf5"
    report = generate(config(tiny_checkpoint, lift_src, out, n=2, mix=1), echo=False)
    assert report.synthetic == 2 and len(reread(out)) == 3
    assert not storage.exists(syn.staging_url(out))


def test_lerobot_source_and_destination(tiny_checkpoint, tmp_path):
    src, out = str(tmp_path / "lr"), str(tmp_path / "lr_out")
    write_episodes((source_episode("tabletop", i, 10) for i in range(4)), src, "lerobot")
    generate(config(tiny_checkpoint, src, out, n=2, mix=1), echo=False)
    episodes = reread(out)
    assert len(episodes) == 3 and sum(bool(e.meta.get("synthetic")) for e in episodes) == 2
