"""Shims that let robomimic 0.3.0 import on a current stack (see ../shared/NOTES.md).

Imported by the robomimic experiment scripts, which run in a scratch venv and never import hma.
"""

from __future__ import annotations

import subprocess
import sys
import types

_KEEP_ALIVE: list = []  # torch.library definitions vanish when their Library is collected


def stub_mujoco_py() -> None:
    """robomimic's robosuite wrapper imports mujoco_py, which no longer installs; robomimic only
    needs `mujoco_py.builder.MujocoException` from it (an exception type to catch)."""
    try:
        import mujoco_py  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure means: use the stub
        builder = types.ModuleType("mujoco_py.builder")

        class MujocoException(Exception):
            pass

        builder.MujocoException = MujocoException
        module = types.ModuleType("mujoco_py")
        module.builder = builder
        sys.modules["mujoco_py"] = module
        sys.modules["mujoco_py.builder"] = builder


def patch_torchvision_ops() -> None:
    """A PyPI torchvision beside a torch it was not built for fails on import with
    `operator torchvision::nms does not exist`; defining the op schemas first lets it import
    (robomimic never calls nms). Probed in a subprocess so a working install is left alone."""
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True
    )
    if probe.returncode == 0 or "torchvision::nms" not in probe.stderr:
        return
    import torch.library

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP_ALIVE.append(lib)
    print("patched: torchvision::nms / qnms defined through torch.library")
