"""`hma sim generate`: real datasets from the experts, identical whatever the worker count."""

from __future__ import annotations

import numpy as np

from hma import cli, formats
from hma.envs.record import RecordJob, default_format, record


def _episodes(url: str):
    return list(formats.iter_episodes(url))


def test_default_formats():
    assert default_format("robosuite_lift") == "robomimic"
    assert default_format("tabletop") == "rlds"
    assert default_format("pusht") == "lerobot"
    assert default_format("metaworld_reach") == "lerobot"


def test_generate_writes_language_table_rlds(tmp_path, capsys):
    out = str(tmp_path / "tt")
    assert cli.main(["sim", "generate", "--env", "tabletop", "--episodes", "10", "--out", out]) == 0
    assert "10 written" in capsys.readouterr().out
    eps = _episodes(out)
    assert [ep.split for ep in eps].count("val") == 1
    assert all(ep.dataset == "tabletop" and ep.instruction for ep in eps)
    assert all(ep.frames.shape[1:] == (64, 64, 3) for ep in eps)
    assert "effector_translation" in eps[0].extras
    assert sum(bool(ep.success) for ep in eps) >= 8


def test_ray_workers_give_the_same_dataset(ray_cluster, tmp_path):
    one = record(RecordJob("tabletop", 4, str(tmp_path / "a"), "video", seed=5, workers=1))
    two = record(RecordJob("tabletop", 4, str(tmp_path / "b"), "video", seed=5, workers=2))
    assert one.per_episode == two.per_episode
    for a, b in zip(_episodes(str(tmp_path / "a")), _episodes(str(tmp_path / "b")), strict=True):
        assert a.episode_id == b.episode_id
        np.testing.assert_array_equal(a.actions, b.actions)


def test_unsuccessful_episodes_are_kept_and_labelled_unless_only_success(tmp_path):
    # heavy noise makes some expert episodes fail
    job = RecordJob("tabletop", 6, str(tmp_path / "all"), "video", noise=2.0, seed=1)
    summary = record(job)
    assert summary.written == 6 and summary.successes < 6
    labels = [ep.success for ep in _episodes(job.out)]
    assert labels == [ok for _, ok in summary.per_episode]
    only = record(
        RecordJob(
            "tabletop", 6, str(tmp_path / "ok"), "video", noise=2.0, seed=1, only_success=True
        )
    )
    assert only.written == summary.successes
    assert all(ep.success for ep in _episodes(only.job.out))


def test_unknown_env_is_a_clear_error(tmp_path, capsys):
    assert (
        cli.main(
            [
                "sim",
                "generate",
                "--env",
                "warp_drive",
                "--episodes",
                "1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "unknown env 'warp_drive'" in capsys.readouterr().err
