"""Acceptance check: can robomimic 0.3.0 replay a robosuite HDF5 file that hma wrote?

Run it with a Python that has robomimic, robosuite 1.5.2 and mujoco 3.3.0 installed (it never
imports hma):

    MUJOCO_GL=egl /tmp/scratch-robomimic/bin/python experiments/robomimic_replay.py lift.hdf5

Everything goes through robomimic's own API, the way robomimic/scripts/playback_dataset.py does:
the env comes from the file's `env_args` (`FileUtils.get_env_metadata_from_dataset` +
`EnvUtils.create_env_from_metadata`), each demo starts with
`env.reset_to({"states": states[0], "model": model_file})`, then two checks per demo:

1. state restore: for every step t, `env.reset_to({"states": states[t]})` and compare robomimic's
   observation with the stored one: low-dim keys (max abs error) and the camera image, both as
   robomimic renders it (robosuite's default scene: shadows and reflections on) and with the
   scene flags hma records with (shadows and reflections off), which should match exactly.
2. open-loop: from states[0], step the recorded actions and report how far the simulator state,
   the end effector and the object drift from the recorded trajectory, and whether the replayed
   episode succeeds (`env.is_success()["task"]`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import h5py
import numpy as np
from robomimic_shims import stub_mujoco_py

LOW_DIM = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")


def demo_names(f: h5py.File) -> list[str]:
    return sorted(f["data"], key=lambda k: int(k.split("_")[1]))


def image_key_of(f: h5py.File, demo: str) -> str | None:
    keys = [k for k in f[f"data/{demo}/obs"] if k.endswith("_image")]
    return keys[0] if keys else None


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """robomimic's processed image (float CHW in [0, 1]) back to uint8 HWC pixels."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    return image


def set_scene_flags(env, shadows: bool) -> None:
    """Shadows/reflections of the offscreen render context (robosuite's MjRenderContext)."""
    import mujoco

    ctx = env.env.sim._render_context_offscreen
    if ctx is None:  # created on first render
        env.env.sim.render(camera_name="agentview", width=8, height=8)
        ctx = env.env.sim._render_context_offscreen
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(shadows)


def restore_check(env, g: h5py.Group, image_key: str | None) -> dict:
    """reset_to(states[t]) for every t: robomimic's obs vs the stored obs."""
    states = g["states"][()]
    stored = {k: g[f"obs/{k}"][()] for k in LOW_DIM if f"obs/{k}" in g}
    frames = g[f"obs/{image_key}"][()] if image_key else None
    low_err = dict.fromkeys(stored, 0.0)
    img_default, img_hma, exact, worst = [], [], 0, 0
    for t in range(len(states)):
        obs = env.reset_to({"states": states[t]})
        for k, want in stored.items():
            low_err[k] = max(low_err[k], float(np.abs(obs[k] - want[t]).max()))
        if frames is None:
            continue
        h, w = frames.shape[1:3]
        got = to_uint8_hwc(obs[image_key])  # robomimic's observation (robosuite default scene)
        img_default.append(float(np.abs(got.astype(int) - frames[t]).mean()))
        set_scene_flags(env, shadows=False)
        cam = image_key[: -len("_image")]
        got = env.render(mode="rgb_array", height=h, width=w, camera_name=cam)
        set_scene_flags(env, shadows=True)
        diff = np.abs(got.astype(int) - frames[t])
        img_hma.append(float(diff.mean()))
        worst = max(worst, int(diff.max()))
        exact += int(np.array_equal(got, frames[t]))
    out = {"steps": len(states), "low_dim_max_err": low_err}
    if frames is not None:
        out |= {
            "img_mae_default": float(np.mean(img_default)),
            "img_mae_hma_flags": float(np.mean(img_hma)),
            "img_exact": exact,
            "img_max_diff": worst,
        }
    return out


def open_loop_check(env, g: h5py.Group) -> dict:
    """From states[0], step the recorded actions; drift from the recorded trajectory."""
    states, actions = g["states"][()], g["actions"][()]
    eef = g["obs/robot0_eef_pos"][()] if "obs/robot0_eef_pos" in g else None
    obj = g["obs/object"][()] if "obs/object" in g else None
    env.reset_to({"states": states[0]})
    nq = env.env.sim.model.nq
    qpos_drift, eef_drift, obj_drift = [], [], []
    success_at = None
    last = None
    for t, action in enumerate(actions):
        obs, _, _, _ = env.step(action)
        last = obs
        if env.is_success()["task"] and success_at is None:
            success_at = t
        if t + 1 < len(states):
            qpos = env.env.sim.get_state().flatten()[1 : 1 + nq]  # [time, qpos, qvel, ...]
            qpos_drift.append(float(np.abs(qpos - states[t + 1][1 : 1 + nq]).max()))
            if eef is not None:
                eef_drift.append(float(np.linalg.norm(obs["robot0_eef_pos"] - eef[t + 1])))
            if obj is not None:
                obj_drift.append(float(np.linalg.norm(obs["object"][:3] - obj[t + 1][:3])))
    return {
        "qpos_max_drift": max(qpos_drift, default=0.0),
        "eef_max_drift_m": max(eef_drift, default=0.0),
        "eef_final_drift_m": eef_drift[-1] if eef_drift else 0.0,
        "object_max_drift_m": max(obj_drift, default=0.0),
        "success_at_end": bool(env.is_success()["task"]),
        "first_success_step": success_at,
        "final_object_z": float(last["object"][2]) if last is not None else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hdf5")
    parser.add_argument("--demos", type=int, default=0, help="check only the first N demos")
    parser.add_argument("--no-images", action="store_true", help="skip the image comparison")
    args = parser.parse_args()

    os.environ.setdefault("MUJOCO_GL", "egl")
    stub_mujoco_py()
    import mujoco
    import robomimic
    import robomimic.utils.env_utils as EnvUtils
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    import robosuite

    print(
        f"robomimic {robomimic.__version__}, robosuite {robosuite.__version__}, "
        f"mujoco {mujoco.__version__}, numpy {np.__version__}, MUJOCO_GL={os.environ['MUJOCO_GL']}"
    )
    with h5py.File(args.hdf5, "r") as f:
        demos = demo_names(f)
        image_key = None if args.no_images else image_key_of(f, demos[0])
    demos = demos[: args.demos] if args.demos else demos

    # robomimic returns only the obs keys ObsUtils knows; images as rgb modality
    spec = {"obs": {"low_dim": list(LOW_DIM), "rgb": [image_key] if image_key else []}}
    ObsUtils.initialize_obs_utils_with_obs_specs(obs_modality_specs=spec)
    env_meta = FileUtils.get_env_metadata_from_dataset(dataset_path=args.hdf5)
    t0 = time.time()
    env = EnvUtils.create_env_from_metadata(
        env_meta=env_meta, render=False, render_offscreen=True, use_image_obs=bool(image_key)
    )
    print(f"create_env_from_metadata: {type(env).__name__}({env.name}) in {time.time() - t0:.1f}s")
    print(env)
    # open-loop replay needs no camera: a second env from the same metadata, low-dim obs only
    t0 = time.time()
    blind = EnvUtils.create_env_from_metadata(env_meta=env_meta, render=False, use_image_obs=False)
    print(f"create_env_from_metadata (low-dim only) in {time.time() - t0:.1f}s")

    rows = []
    with h5py.File(args.hdf5, "r") as f:
        for demo in demos:
            g = f[f"data/{demo}"]
            t0 = time.time()
            model = g.attrs["model_file"]
            env.reset_to({"states": g["states"][0], "model": model})
            restored = restore_check(env, g, image_key)
            blind.reset_to({"states": g["states"][0], "model": model})
            replayed = open_loop_check(blind, g)
            rows.append((demo, restored, replayed))
            low = " ".join(f"{k}={v:.1e}" for k, v in restored["low_dim_max_err"].items())
            img = (
                f" | img MAE default {restored['img_mae_default']:.2f}, hma flags "
                f"{restored['img_mae_hma_flags']:.3f} (max px diff {restored['img_max_diff']}), "
                f"exact {restored['img_exact']}/{restored['steps']}"
                if image_key
                else ""
            )
            print(
                f"{demo}: {restored['steps']} steps | restore max err {low}{img} | open-loop "
                f"qpos drift {replayed['qpos_max_drift']:.2e}, eef drift max "
                f"{replayed['eef_max_drift_m'] * 1000:.2f} mm, object drift max "
                f"{replayed['object_max_drift_m'] * 1000:.2f} mm, success "
                f"{replayed['success_at_end']} (first at step {replayed['first_success_step']}) "
                f"[{time.time() - t0:.1f}s]"
            )

    n = len(rows)
    worst_low = max(max(r["low_dim_max_err"].values()) for _, r, _ in rows)
    print(f"\nSUMMARY over {n} demos of {args.hdf5}")
    print(f"  state restore: worst low-dim obs error {worst_low:.2e}")
    if image_key:
        exact = sum(r["img_exact"] for _, r, _ in rows)
        steps = sum(r["steps"] for _, r, _ in rows)
        print(
            f"  images: mean MAE robomimic default render "
            f"{np.mean([r['img_mae_default'] for _, r, _ in rows]):.2f}/255, with hma scene flags "
            f"{np.mean([r['img_mae_hma_flags'] for _, r, _ in rows]):.4f}/255, "
            f"bit-exact {exact}/{steps} frames, max pixel difference "
            f"{max(r['img_max_diff'] for _, r, _ in rows)}"
        )
    ok = sum(p["success_at_end"] for _, _, p in rows)
    print(
        f"  open-loop replay: success {ok}/{n}; median / max eef drift "
        f"{np.median([p['eef_max_drift_m'] for _, _, p in rows]) * 1000:.2f} / "
        f"{max(p['eef_max_drift_m'] for _, _, p in rows) * 1000:.2f} mm; max object drift "
        f"{max(p['object_max_drift_m'] for _, _, p in rows) * 1000:.2f} mm; max qpos drift "
        f"{max(p['qpos_max_drift'] for _, _, p in rows):.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
