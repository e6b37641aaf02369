"""The generation commands' argument definitions stay import-light: `hma --help` must not load torch."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parsers_imports_no_torch():
    code = (
        "import argparse, sys\n"
        "from hma.cli import generate as commands\n"
        "for configure in (commands.configure_train_success, commands.configure_evaluate_policy,\n"
        "                  commands.configure_report):\n"
        "    configure(argparse.ArgumentParser())\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
