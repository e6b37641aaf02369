"""Benchmarks: each prints its figures, comparing as ratios measured within one run.

Run them from the repository root as modules (`python -m benchmarks.<name>`), so that they can
use the test helpers (`tests.helpers`) to build inputs whose content does not matter.
"""
