"""The `hma` command line as a user runs it: convert between formats, show a source, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hma import cli, formats
from hma.episodes import load_registry


def _write(episodes, url, fmt):
    formats.write_episodes(episodes, url, fmt, load_registry())


def test_help_runs_as_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "hma.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "formats" in out.stdout and "datasets" in out.stdout


@pytest.mark.parametrize(
    ("src_fmt", "dst_fmt"),
    [("robomimic", "rlds"), ("rlds", "lerobot"), ("lerobot", "video"), ("video", "robomimic")],
)
def test_convert_any_to_any(ray_cluster, tmp_path, make_episode, capsys, src_fmt, dst_fmt):
    originals = [
        make_episode("robosuite_lift", seed=s, split="val" if s == 2 else "train") for s in range(3)
    ]
    src = str(tmp_path / f"src-{src_fmt}")
    dst = str(tmp_path / f"dst-{dst_fmt}")
    _write(originals, src, src_fmt)
    assert cli.main(["formats", "convert", src, dst, "--to", dst_fmt]) == 0
    assert "read 3 = written 3 + rejected 0" in capsys.readouterr().out
    back = {ep.episode_id: ep for ep in formats.iter_episodes(dst, dst_fmt)}
    assert sorted(back) == sorted(ep.episode_id for ep in originals)
    for ep in originals:
        got = back[ep.episode_id]
        np.testing.assert_array_equal(got.actions, ep.actions)
        assert got.split == ep.split and got.success == ep.success
        assert np.abs(got.frames.astype(int) - ep.frames).mean() < 6


def test_convert_between_s3_urls(ray_cluster, s3_bucket, make_episode, capsys):
    originals = [make_episode("tabletop", seed=s) for s in range(2)]
    src, dst = f"{s3_bucket}/raw/tt.hdf5", f"{s3_bucket}/rlds/tt"
    _write(originals, src, "robomimic")
    assert cli.main(["formats", "convert", src, dst, "--to", "rlds"]) == 0
    assert "read 2 = written 2 + rejected 0" in capsys.readouterr().out
    back = list(formats.iter_episodes(dst))
    assert [ep.instruction for ep in back] == [ep.instruction for ep in originals]
    np.testing.assert_array_equal(back[1].frames, originals[1].frames)


def test_convert_puts_bad_episodes_aside_with_reason(ray_cluster, tmp_path, make_episode, capsys):
    good = [make_episode("pusht", seed=s) for s in range(3)]
    bad = make_episode("pusht", seed=9)
    bad.actions[2, 1] = np.nan
    src = str(tmp_path / "src.hdf5")
    _write([*good, bad], src, "robomimic")
    dst = str(tmp_path / "out_rlds")
    assert cli.main(["formats", "convert", src, dst, "--to", "rlds"]) == 0
    out = capsys.readouterr().out
    assert "read 4 = written 3 + rejected 1" in out
    assert "pusht-9" in out and "non-finite" in out
    lines = (tmp_path / "out_rlds.rejected.jsonl").read_text().splitlines()
    assert [json.loads(x)["episode_id"] for x in lines] == ["pusht-9"]
    assert (
        cli.main(["formats", "convert", src, str(tmp_path / "o2"), "--to", "rlds", "--strict"]) == 1
    )


def test_convert_refuses_existing_destination(tmp_path, make_episode, capsys):
    src = str(tmp_path / "a.hdf5")
    _write([make_episode()], src, "robomimic")
    assert cli.main(["formats", "convert", src, src, "--to", "robomimic"]) == 2
    assert "destination exists" in capsys.readouterr().err


def test_unrecognised_source_names_it(ray_cluster, tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    assert cli.main(["formats", "convert", str(junk), str(tmp_path / "o"), "--to", "rlds"]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "not a recognised episode source" in err


def test_show_prints_counts_stats_and_writes_strip(ray_cluster, tmp_path, make_episode, capsys):
    eps = [
        make_episode("metaworld_reach", seed=s, steps=10 + s, split="val" if s == 3 else "train")
        for s in range(4)
    ]
    # a synthetic episode of unknown outcome: counted apart, and outside the success rate
    eps.append(
        make_episode("metaworld_reach", seed=4, steps=14, success=None, meta={"synthetic": True})
    )
    src = str(tmp_path / "mw.hdf5")
    _write(eps, src, "robomimic")
    png = tmp_path / "strip.png"
    assert cli.main(["datasets", "show", src]) == 0
    text = capsys.readouterr().out
    assert "episodes 5 (train 4, val 1; real 4, synthetic 1)" in text, text
    assert "success 4/5 labelled, 50%" in text, text
    assert cli.main(["datasets", "show", src, "--png", str(png), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    part = summary["datasets"]["metaworld_reach"]
    assert part["episodes"] == {"train": 4, "val": 1}
    assert (part["real"], part["synthetic"], part["labelled"]) == (4, 1, 4)
    assert part["frames"] == 10 + 11 + 12 + 13 + 14
    all_actions = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_allclose(part["actions"]["mean"], all_actions.mean(0), rtol=1e-9)
    np.testing.assert_allclose(part["actions"]["std"], all_actions.std(0), rtol=1e-9)
    np.testing.assert_allclose(part["actions"]["max"], all_actions.max(0))
    assert part["success_rate"] == pytest.approx(0.5)
    strip = np.asarray(Image.open(png))
    assert strip.shape[0] >= 5 * 64 and strip.std() > 10  # a row of thumbnails per episode


def test_datasets_list_shows_registry(capsys):
    assert cli.main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "robosuite_lift" in out and "tabletop" in out


def test_user_registry_dataset_converts_with_registry_flag(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HMA_REGISTRY", "")  # --registry extends it; restored after the test
    reg = tmp_path / "mine.yaml"
    reg.write_text(
        "datasets:\n  my_arm:\n    embodiment: ur5\n    action_dim: 3\n    hz: 15\n"
        "    camera: wrist\n    frame_size: [64, 64]\n    stride: 3\n"
    )
    registry = load_registry([str(reg)])
    rng = np.random.default_rng(0)
    from hma.envs.procedural import moving_block_frames
    from hma.episodes import Episode

    eps = [
        Episode(
            "my_arm",
            f"arm-{i}",
            moving_block_frames(6, 64, i),
            rng.normal(size=(6, 3)).astype(np.float32),
            hz=15.0,
        )
        for i in range(2)
    ]
    src = str(tmp_path / "arm.hdf5")
    formats.write_episodes(eps, src, "robomimic", registry)
    dst = str(tmp_path / "arm_lerobot")
    assert (
        cli.main(["formats", "convert", src, dst, "--to", "lerobot", "--registry", str(reg)]) == 0
    )
    assert "read 2 = written 2 + rejected 0" in capsys.readouterr().out
    back = list(formats.iter_episodes(dst, "lerobot"))
    assert [ep.hz for ep in back] == [15.0, 15.0]


def test_missing_source_is_not_found(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert cli.main(["datasets", "show", missing]) == 2
    assert f"{missing}: not found" in capsys.readouterr().err
