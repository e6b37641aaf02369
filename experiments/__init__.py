"""Experiments: scripts that reproduce the paper's claims at CPU scale and write docs/results.md.

Run them from the repository root as modules: `python -m experiments.<name>`.
"""
