"""mp4 helpers: encode/decode round trips, frame ranges, packed files, AV1, S3, damaged files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hma.errors import FormatError
from hma.formats import mp4

MAX_MEAN_ABS_ERROR = 6.0  # on 0-255: lossy codec tolerance


def moving_block_frames(steps: int, size: int = 64) -> np.ndarray:
    """A red block moving over a gradient: camera-like structure, not noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.empty((steps, size, size, 3), np.uint8)
    for t in range(steps):
        frames[t] = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 96)], -1)
        x = 4 + (3 * t) % (size - 16)
        frames[t, 20:32, x : x + 12] = (230, 40, 40)
    return frames


def numbered_frames(steps: int, size: int = 64) -> np.ndarray:
    """Moving-block frames whose blue level encodes their index (12 levels apart), so decoding
    the wrong frame is an error far beyond codec noise."""
    frames = moving_block_frames(steps, size)
    frames[..., 2] = (20 + 12 * np.arange(steps) % 220)[:, None, None]
    return frames


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def av1_available() -> bool:
    try:
        mp4.VideoEncoding(codec="av1").encoder()
    except FormatError:
        return False
    return True


needs_av1 = pytest.mark.skipif(not av1_available(), reason="this PyAV build has no AV1 encoder")


def test_write_read_round_trip(tmp_path):
    frames = numbered_frames(16)
    path = str(tmp_path / "a.mp4")
    assert mp4.write_mp4(frames, path, fps=10) == 16
    info = mp4.probe(path)
    assert (info.codec, info.width, info.height, info.fps, info.num_frames) == (
        "h264",
        64,
        64,
        10,
        16,
    )
    decoded = mp4.read_frames(path)
    assert decoded.dtype == np.uint8
    assert mean_error(decoded, frames) < MAX_MEAN_ABS_ERROR


def test_odd_frame_size_is_padded_and_cropped_back(tmp_path):
    frames = moving_block_frames(6)[:, :33, :47]
    path = str(tmp_path / "odd.mp4")
    mp4.write_mp4(frames, path, fps=10)
    assert (mp4.probe(path).width, mp4.probe(path).height) == (48, 34)  # yuv420p needs even
    decoded = mp4.read_frames(path, size=(33, 47))
    assert mean_error(decoded, frames) < MAX_MEAN_ABS_ERROR


def test_read_frame_range_returns_exactly_those_frames(tmp_path):
    frames = numbered_frames(20)
    path = str(tmp_path / "a.mp4")
    mp4.write_mp4(frames, path, fps=10, encoding=mp4.VideoEncoding(gop=4))
    part = mp4.read_frames(path, start=5, stop=12)
    assert part.shape[0] == 7
    assert mean_error(part, frames[5:12]) < MAX_MEAN_ABS_ERROR
    # One frame off would be 12 levels off in the blue channel.
    assert np.abs(part[..., 2].mean(axis=(1, 2)) - frames[5:12, ..., 2].mean(axis=(1, 2))).max() < 4
    assert mp4.read_frames(path, start=18).shape[0] == 2  # a range past the end is clipped


def test_read_frames_at_timestamps_and_out_of_range(tmp_path):
    frames = numbered_frames(10)
    path = str(tmp_path / "a.mp4")
    mp4.write_mp4(frames, path, fps=20)
    picked = mp4.read_frames_at(path, [0.0, 0.25, 0.45], fps=20)
    assert mean_error(picked, frames[[0, 5, 9]]) < MAX_MEAN_ABS_ERROR
    with pytest.raises(FormatError, match="no frame at t=0.5000s"):
        mp4.read_frames_at(path, [0.45, 0.5], fps=20)


@pytest.mark.parametrize("codec", ["h264", pytest.param("av1", marks=needs_av1)])
def test_concatenated_episodes_decode_at_their_timestamps(tmp_path, codec):
    """LeRobot v3 packing: episodes copied one after another; frame i of an episode is at
    from_timestamp + i/fps. Both decoders (decord for H.264, PyAV for AV1) must hit the bounds."""
    fps = 15
    encoding = mp4.VideoEncoding(codec=codec)
    episodes = [numbered_frames(n)[::-1].copy() for n in (7, 12, 9)]
    packed = mp4.Mp4Concat(str(tmp_path / "packed.mp4"), fps)
    bounds = []
    for i, frames in enumerate(episodes):
        one = str(tmp_path / f"ep{i}.mp4")
        count = mp4.encode_frames(frames, one, fps, encoding)
        bounds.append(packed.append(one, count))
    packed.close()
    assert bounds[1] == pytest.approx((7 / fps, 19 / fps))
    assert mp4.probe(packed.path).num_frames == 28
    assert mp4.probe(packed.path).codec == codec
    for (start, _), frames in zip(bounds, episodes, strict=True):
        times = start + np.arange(len(frames)) / fps
        assert mean_error(mp4.read_frames_at(packed.path, times, fps), frames) < MAX_MEAN_ABS_ERROR
    everything = mp4.read_frames(packed.path)
    assert mean_error(everything, np.concatenate(episodes)) < MAX_MEAN_ABS_ERROR


@needs_av1
def test_av1_file_decodes_through_pyav_fallback(tmp_path):
    import decord

    frames = numbered_frames(8)
    path = str(tmp_path / "av1.mp4")
    mp4.write_mp4(frames, path, fps=10, encoding=mp4.VideoEncoding(codec="av1"))
    with pytest.raises(decord.DECORDError):  # why the fallback exists (NOTES.md)
        decord.VideoReader(path)
    assert mean_error(mp4.read_frames(path), frames) < MAX_MEAN_ABS_ERROR
    assert mean_error(mp4.read_frames(path, 3, 6), frames[3:6]) < MAX_MEAN_ABS_ERROR


def test_corrupt_or_missing_mp4_raises_format_error_naming_file(tmp_path):
    good = str(tmp_path / "good.mp4")
    mp4.write_mp4(numbered_frames(8), good, fps=10)
    with open(good, "rb") as f:
        data = f.read()
    truncated = str(tmp_path / "truncated.mp4")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    garbage = str(tmp_path / "garbage.mp4")
    with open(garbage, "wb") as f:
        f.write(os.urandom(2000))
    for path in (truncated, garbage, str(tmp_path / "missing.mp4")):
        with pytest.raises(FormatError, match=os.path.basename(path)):
            mp4.read_frames(path)


def test_unknown_codec_is_a_clear_error(tmp_path):
    with pytest.raises(FormatError, match="no encoder"):
        mp4.write_mp4(numbered_frames(2), str(tmp_path / "x.mp4"), 10, mp4.VideoEncoding("nope"))


@pytest.mark.parametrize("whole_file_max", [mp4.REMOTE_WHOLE_FILE_MAX_BYTES, 0])
def test_s3_round_trip(s3_bucket, monkeypatch, whole_file_max):
    """Small remote files are fetched whole (decord); larger ones are range-read by PyAV."""
    monkeypatch.setattr(mp4, "REMOTE_WHOLE_FILE_MAX_BYTES", whole_file_max)
    frames = numbered_frames(12)
    url = f"{s3_bucket}/videos/a.mp4"
    mp4.write_mp4(frames, url, fps=10)
    assert mean_error(mp4.read_frames(url), frames) < MAX_MEAN_ABS_ERROR
    picked = mp4.read_frames_at(url, [0.3, 0.4, 0.5], fps=10)
    assert mean_error(picked, frames[3:6]) < MAX_MEAN_ABS_ERROR
    with pytest.raises(FormatError, match="missing.mp4"):
        mp4.read_frames(f"{s3_bucket}/videos/missing.mp4")
