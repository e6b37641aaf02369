"""experiments/policy_eval.py at --smoke size: every stage runs, resumes, and writes its section."""

from __future__ import annotations

import json

from experiments import policy_eval


def test_the_smoke_run_writes_its_table_and_plot_and_resumes(tmp_path, ray_cluster):
    root, results = tmp_path / "run", tmp_path / "results.md"
    argv = ["--smoke", "--root", str(root), "--results", str(results)]
    assert policy_eval.main(argv) == 0
    text = results.read_text()
    assert "## Policy evaluation in the learned simulator (paper Table 5) — smoke" in text
    assert "| step 10 |" in text and "Pearson r" in text and "Command: `python -m" in text
    assert (tmp_path / "img" / "policy_eval_smoke.png").read_bytes()[:4] == b"\x89PNG"
    stages = ("record", "tokenizer", "store", "world_model", "policy", "screen", "success")
    assert all((root / f"{s}.json").exists() for s in (*stages, "evaluate"))
    picked = json.loads((root / "screen.json").read_text())["picked"]
    assert len(picked) == 2  # the smoke size picks two checkpoints
    # a second run finds every stage done and only rewrites the section
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*.json")}
    assert policy_eval.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in root.glob("*.json")} == stamps
    assert results.read_text().count("## Policy evaluation") == 1


def test_checkpoints_are_picked_to_spread_over_the_success_range():
    rates = {100: 0.0, 200: 0.1, 300: 0.4, 400: 0.45, 500: 0.7, 600: 0.95, 700: 0.9}
    assert policy_eval.pick_spread(rates, 4) == [100, 300, 500, 600]
    assert policy_eval.pick_spread({10: 0.0, 20: 0.0}, 2) == [10, 20]
