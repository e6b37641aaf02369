"""`hma report`: the page and its assets (GIF, MP4, PNG, curves) exist and are what they claim,
metrics are filled in per dataset, an unreadable dataset is reported rather than fatal, and
training curves come from real TensorBoard event files."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from hma import formats
from hma.cli.generate import configure_report, report_command
from hma.episodes import load_registry
from hma.errors import HmaError
from hma.formats.mp4 import probe
from hma.generate.curves import group_curves, line_plot, read_scalars
from hma.generate.report import (
    ReportConfig,
    build_report,
    run_dir_of,
    side_by_side,
)
from tests.helpers.generate import source_episode

HORIZON = 5


def _write_events(
    logdir: str, points: dict[str, list[tuple[int, float]]], suffix: str = ""
) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir, filename_suffix=suffix)
    for tag, values in points.items():
        for step, value in values:
            writer.add_scalar(tag, value, step)
    writer.close()


@pytest.fixture(scope="module")
def run(tiny_checkpoint, tmp_path_factory) -> str:
    """A run dir as `hma pretrain` leaves it: checkpoint_*/ and tensorboard/ event files."""
    root = tmp_path_factory.mktemp("run") / "tiny-run"
    shutil.copytree(tiny_checkpoint, root / "checkpoint_000001")
    _write_events(
        str(root / "tensorboard"),
        {
            "train/loss": [(1, 6.0), (2, 5.0), (3, 4.5)],
            "train/video_loss": [(1, 5.5), (2, 4.6), (3, 4.1)],
            "train/lr": [(1, 1e-4), (2, 2e-4), (3, 2e-4)],
            "val/robosuite_lift/psnr": [(2, 12.0), (3, 13.5)],
            "val/tabletop/psnr": [(2, 11.0), (3, 11.5)],
        },
    )
    return str(root)


@pytest.fixture(scope="module")
def lift_source(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("src") / "lift.hdf5")
    episodes = [source_episode("robosuite_lift", i, steps=16) for i in range(5)]
    formats.write_episodes(episodes, url, "robomimic", load_registry())
    return url


def test_event_files_are_read_back_and_a_resumed_run_overrides(tmp_path):
    logdir = str(tmp_path / "tb")
    _write_events(logdir, {"train/loss": [(1, 3.0), (2, 2.0)], "val/a/psnr": [(2, 10.0)]}, ".1")
    # resumed at step 2 (in the same second here: the suffix keeps the files apart and ordered)
    _write_events(logdir, {"train/loss": [(2, 1.5), (3, 1.0)]}, ".2")
    scalars = read_scalars(logdir)
    assert scalars["train/loss"] == [(1, 3.0), (2, 1.5), (3, 1.0)]
    assert scalars["val/a/psnr"] == [(2, 10.0)]
    assert read_scalars(str(tmp_path / "missing")) == {}
    groups = group_curves(scalars)
    assert set(groups) == {"train losses", "val psnr"} and list(groups["val psnr"]) == ["a"]


def test_line_plots_draw_whatever_they_get():
    img = line_plot("loss", {"a": [(0, 1.0), (10, 0.5)], "b": [(5, 0.7)]})
    assert img.shape == (220, 420, 3) and img.dtype == np.uint8
    assert (img != 255).any(axis=2).sum() > 500  # axes, text and lines were drawn
    for series in ({"a": [(1, 2.0), (2, 2.0)]}, {"a": [(1, math.nan)]}, {}):
        assert line_plot("flat", series).shape == (220, 420, 3)


def test_side_by_side_layout():
    real = np.zeros((2, 3, 32, 32, 3), np.uint8)
    gen = np.full((2, 3, 32, 32, 3), 200, np.uint8)
    video = side_by_side(real, gen)
    assert video.shape == (3, 2 * 128 + 4, 2 * 128 + 4, 3)  # 32 px upscaled x4, 4 px gaps
    assert (video[:, :128, :128] == 0).all() and (video[:, :128, 132:] == 200).all()


def test_run_dir_of_a_checkpoint():
    assert run_dir_of("/r/name/checkpoint_000003") == "/r/name"
    assert run_dir_of("s3://b/r/name/checkpoint_000003/") == "s3://b/r/name"
    assert run_dir_of("/some/ckpt") == "/some/ckpt"


def test_report_page_assets_and_metrics(run, lift_source, tmp_path):
    out = str(tmp_path / "report")
    cfg = ReportConfig(clips=2, horizon=HORIZON, trials=2)
    page = build_report(run, out, cfg, sources={"robosuite_lift": lift_source})
    assert page == os.path.join(out, "index.html")
    with open(page) as f:
        text = f.read()
    linked = re.findall(r"(?:src|href)='([^']+)'", text)
    assert linked and all(os.path.isfile(os.path.join(out, name)) for name in linked)
    assert {"robosuite_lift.gif", "robosuite_lift.mp4", "robosuite_lift.png"} <= set(linked)
    assert sum(name.startswith("curve_") for name in linked) == 3  # losses, lr, val psnr

    frames = 1 + HORIZON
    gif = Image.open(os.path.join(out, "robosuite_lift.gif"))
    assert gif.n_frames == frames
    assert gif.size == (2 * 128 + 4, 2 * 128 + 4)  # 2 clips x (real, generated), 32 px x4
    assert probe(os.path.join(out, "robosuite_lift.mp4")).num_frames == frames

    with open(os.path.join(out, "report.json")) as f:
        record = json.load(f)
    lift, tabletop = record["datasets"]
    assert lift["name"] == "robosuite_lift" and lift["frames"] == frames
    assert lift["clips"] == ["robosuite_lift-real-4", "robosuite_lift-real-0"]  # val first
    for key in ("psnr", "ssim", "delta_psnr", "perplexity"):
        assert lift[key] is not None and math.isfinite(lift[key])
    assert 0 < lift["perplexity"] < 2 * 1000  # an untrained model: near the uniform vocab
    assert tabletop["skipped"] and "store.zarr" in tabletop["skipped"]  # no store was written
    assert "store.zarr" in text  # the reason reaches the page


def test_cli_parses_sources(run, lift_source, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    configure_report(parser)
    out = str(tmp_path / "r")
    args = parser.parse_args(
        [
            run,
            "--out",
            out,
            "--horizon",
            "2",
            "--clips",
            "1",
            "--source",
            f"robosuite_lift={lift_source}",
        ]
    )
    assert report_command(args) == 0
    assert "index.html" in capsys.readouterr().out
    with pytest.raises(HmaError, match="DATASET=URL"):
        report_command(parser.parse_args([run, "--source", "nonsense"]))
    with pytest.raises(HmaError, match="lacks"):
        report_command(parser.parse_args([run, "--source", f"pusht={lift_source}"]))
