"""experiments/synthetic_mixing.py at --smoke size on the tabletop dataset (RLDS, held-out action
error): every stage runs and writes its table and plot. The Lift half differs only in its
format (robomimic files with state: tests/generate/test_synthetic_state.py) and its score
(ground-truth success: tests/experiments/test_policy_eval_smoke.py runs that code)."""

from __future__ import annotations

import json

from experiments import synthetic_mixing
from hma.formats import get_format, list_refs
from hma.tokenize.checkpoint import build_tokenizer, save_tokenizer
from hma.tokenize.presets import fsq


def test_the_smoke_run_writes_its_table_and_plot(tmp_path, ray_cluster):
    root, results = tmp_path / "run", tmp_path / "results.md"
    # a tokenizer of the user's own (the policy_eval smoke test trains one through the stage)
    tokenizer = str(tmp_path / "tokenizer")
    save_tokenizer(build_tokenizer(fsq("tiny")), tokenizer)
    argv = ["--smoke", "--only", "tabletop", "--root", str(root), "--results", str(results)]
    assert synthetic_mixing.main([*argv, "--tokenizer", tokenizer]) == 0
    stage = json.loads((root / "tabletop" / "tokenizer.json").read_text())
    assert stage == {"checkpoint": tokenizer, "val_psnr": None, "given": True}
    text = results.read_text()
    assert "## Synthetic data for policy learning (paper Table 6) — smoke" in text
    assert "| 3 + 0 |" in text and "| 3 + 2 |" in text
    assert "action MSE (raw units) on held-out real episodes" in text
    png = tmp_path / "img" / "synthetic_mixing_tabletop_smoke.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    scores = json.loads((root / "tabletop" / "policies.json").read_text())["scores"]
    assert sorted(scores) == ["0_0", "2_0"] and all(s["value"] > 0 for s in scores.values())
    mix = json.loads((root / "tabletop" / "generate.json").read_text())["mixes"]["2"]["url"]
    episodes = [get_format(r["format"]).load(r) for r in list_refs(mix)]
    synthetic = [e for e in episodes if e.meta.get("synthetic")]
    real = [e for e in episodes if not e.meta.get("synthetic")]
    assert len(synthetic) == 2 and len(real) == 3
    # the world model was trained with state: the synthetic steps carry predicted state
    assert all(e.meta["state"].startswith("predicted") for e in synthetic)
    assert all(e.state.shape[1] == real[0].state.shape[1] for e in synthetic)
