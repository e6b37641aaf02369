"""Validation's controllability measurement: ΔPSNR with its standard error over distinct rollout
windows, rollouts longer than the training window, the teacher-forced action gain, the table and
the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hma.model import HMA, model_config
from hma.pipeline.pretrain.mixing import MixConfig, MixedSource
from hma.pipeline.pretrain.validation import (
    PNG_GAP,
    ValidationConfig,
    Validator,
    distinct_windows,
    table,
)
from hma.pipeline.store.reader import TokenStore, WindowSampler
from hma.tokenize.checkpoint import load_tokenizer
from tests.helpers.pretrain_data import FRAME, tokenizer_info, write_store
from tests.helpers.tokenize_fixtures import save_tiny_tokenizer

CPU = torch.device("cpu")
WINDOW = 4  # the model's training window
LONG, SHORT = 12, 6  # kept frames of the pusht / robosuite_lift episodes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    tok_url = save_tiny_tokenizer("fsq", str(root / "tok"))
    info = tokenizer_info(tok_url)
    stores = [
        write_store(str(root / "long.zarr"), info, {"pusht": 2}, frames=LONG),
        write_store(str(root / "short.zarr"), info, {"robosuite_lift": 2}, frames=SHORT, seed=1),
    ]
    return {"root": root, "info": info, "tokenizer": load_tokenizer(tok_url), "stores": stores}


def _source(data, window: int = WINDOW) -> MixedSource:
    config = MixConfig.model_validate({"stores": [{"url": s} for s in data["stores"]]})
    return MixedSource(config, window, "val")


def _model(data, source: MixedSource) -> HMA:
    torch.manual_seed(0)
    info = data["info"]
    config = model_config("tiny", vocab_size=info.vocab_size, grid=tuple(info.grid), window=WINDOW)
    return HMA(config.model_copy(update={"datasets": source.widths})).eval()


def test_distinct_windows_never_repeat_and_take_all_when_few(data):
    sampler = WindowSampler(TokenStore.open(data["stores"][1]), SHORT - 1, "val")
    total = sampler.num_windows("robosuite_lift")  # 2 val episodes x 2 windows
    assert total == 4
    got = distinct_windows(sampler, "robosuite_lift", 32, np.random.default_rng(0))
    assert sorted((w.episode, w.start) for w in got) == sorted({(w.episode, w.start) for w in got})
    assert len(got) == total
    assert len(distinct_windows(sampler, "robosuite_lift", 3, np.random.default_rng(0))) == 3


def test_validator_rolls_out_past_the_training_window(data, tmp_path):
    source = _source(data)
    model = _model(data, source)
    config = ValidationConfig(windows=4, rollouts=3, rollout_frames=8, trials=2, png_rollouts=2)
    validator = Validator(config, source, model.action_width, str(tmp_path), CPU)
    # pusht has 12-frame val episodes; robosuite_lift's are 6 frames, its longest window
    assert {n: s.frames for n, s in validator.rollout_sets.items()} == {
        "pusht": 8,
        "robosuite_lift": SHORT,
    }
    result = validator.run(model, step=7)
    pusht = result.scores["pusht"]
    assert (pusht.rollouts, pusht.rollout_frames) == (3, 8)
    assert pusht.delta_psnr is not None and pusht.delta_psnr_se is not None
    assert pusht.psnr is not None and pusht.psnr > 0
    assert pusht.action_gain is not None and pusht.action_gain != 0  # random weights use actions
    metrics = result.metrics()
    assert "val/pusht/delta_psnr_se" in metrics and "val/robosuite_lift/action_gain" in metrics
    assert metrics["val/seconds"] == result.seconds > 0
    lines = table(result, 1000)
    assert lines[0] == "validation at step 7" and "uniform ppl 1000" in lines[1]
    assert any(line.startswith("pusht") and "3x8" in line for line in lines)
    # the PNG: per rollout real, true-action and random-action rows, every rollout frame
    from PIL import Image

    image = np.asarray(Image.open(result.pngs["pusht"]))
    rows, frames = 2 * 3, 8
    assert image.shape[:2] == (
        rows * FRAME + (rows - 1) * PNG_GAP,
        frames * FRAME + (frames - 1) * PNG_GAP,
    )


def test_a_model_blind_to_actions_has_no_action_gain_and_no_delta_psnr(data):
    source = _source(data)
    model = _model(data, source)
    with torch.no_grad():
        for stem in model.embodiments.stems.values():
            stem[0].weight.zero_()  # the stem's output no longer depends on the actions
    config = ValidationConfig(windows=4, rollouts=3, trials=2, png=False)
    result = Validator(config, source, model.action_width, None, CPU).run(model, step=1)
    for name in ("pusht", "robosuite_lift"):
        scores = result.scores[name]
        assert scores.action_gain == pytest.approx(0, abs=1e-6)
        assert scores.delta_psnr == pytest.approx(0, abs=1e-6)
        assert scores.rollout_frames == WINDOW  # default: the training window


def test_loss_windows_do_not_depend_on_the_rollout_knobs(data):
    source = _source(data)
    few = Validator(ValidationConfig(windows=4, rollouts=1), source, 14, None, CPU)
    many = Validator(ValidationConfig(windows=4, rollouts=4), source, 14, None, CPU)
    for name in few.batches:
        assert torch.equal(few.batches[name].tokens, many.batches[name].tokens)


def test_a_prompt_as_long_as_the_rollout_window_skips_psnr_with_the_reason(data):
    source = _source(data)
    config = ValidationConfig(windows=2, rollouts=2, prompt_frames=WINDOW)
    validator = Validator(config, source, 14, None, CPU)
    assert "prompt_frames 4 leaves nothing to generate in 4 frames" in validator.skipped["pusht"]
