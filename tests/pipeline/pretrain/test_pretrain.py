"""`hma pretrain` on Ray Train: two CPU workers, checkpoints (local and S3), exact resume, a killed
worker, fingerprint checks and fine-tuning on a new dataset. Tiny model, tiny stores, few steps."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
import ray
import torch

from hma import checkpoint
from hma.model import checkpoint as ckpt
from hma.model.checkpoint import load_model
from hma.pipeline.pretrain.config import PretrainConfig
from hma.pipeline.pretrain.driver import plan, run_pretrain
from tests.helpers.pretrain_data import tiny_config, tokenizer_info, write_store
from tests.helpers.sockets import ListenerWatch
from tests.helpers.tokenize_fixtures import save_tiny_tokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    tok = save_tiny_tokenizer("fsq", str(root / "tok"))
    info = tokenizer_info(tok)
    main = write_store(str(root / "main.zarr"), info, {"pusht": 4, "robosuite_lift": 3})
    extra = write_store(str(root / "extra.zarr"), info, {"tabletop": 3}, seed=1)
    return {"root": root, "store": main, "extra": extra, "info": info}


def _config(data, storage_path, **overrides) -> PretrainConfig:
    name = f"pt-{uuid.uuid4().hex[:8]}"
    return PretrainConfig.model_validate(
        tiny_config([data["store"]], storage_path, name, **overrides)
    )


def _losses(result) -> dict[int, float]:
    """Per-step training loss of rank 0; a step logged twice (before a restart) keeps the last."""
    return {r["step"]: r["loss"] for r in result.records if "loss" in r}


@pytest.fixture(scope="module")
def reference(data, ray_cluster):
    """An uninterrupted 2-worker run of 6 steps, checkpoints at 3 and 6, validation at 3 and 6."""
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"
    config = _config(data, str(data["root"] / "runs"))
    with ListenerWatch() as watch:
        result = run_pretrain(config, echo=False)
    return config, result, watch.new


def test_two_workers_train_validate_and_checkpoint(reference, data):
    config, result, _ = reference
    losses = _losses(result)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(v) for v in losses.values())
    assert result.checkpoint.endswith(tuple("0123456789")) or "checkpoint_" in result.checkpoint
    meta = ckpt.read_meta(result.checkpoint)
    assert meta["step"] == 6 and meta["sampler"] == {
        "seed": 0,
        "rank": 0,
        "world": 2,
        "position": 6,
    }
    assert meta["tokenizer"]["fingerprint"] == data["info"].fingerprint
    lift = meta["datasets"]["robosuite_lift"]
    assert lift["registry"]["embodiment"] == "panda" and lift["stride"] == 2
    assert len(lift["action_stats"]["mean"]) == 7 and 0 < lift["weight"] < 1
    model = load_model(ckpt.model_url(result.checkpoint))  # a plain HMA checkpoint inside
    assert set(model.config.datasets) == {"pusht", "robosuite_lift"}
    # proprioception where the store keeps it: a state stem and head, statistics, a loss
    assert model.config.states == {"robosuite_lift": 3} and lift["state_dim"] == 3
    assert (
        len(lift["state_stats"]["mean"]) == 3 and meta["datasets"]["pusht"]["state_stats"] is None
    )
    assert any(r.get("state_loss", 0) > 0 for r in result.records)
    state = checkpoint.load_state(result.checkpoint)
    assert set(state["rng"]) == {"0", "1"} and state["scheduler"]["last_epoch"] == 6
    # validation: per-dataset metrics, a table, PNGs, TensorBoard events
    val = [r for r in result.records if "val/pusht/perplexity" in r]
    assert [r["step"] for r in val] == [3, 6]
    assert all(0 < r["val/pusht/perplexity"] < 1000 for r in val)
    assert "val/robosuite_lift/delta_psnr" in val[-1] and val[-1]["val/pusht/psnr"] > 0
    assert (
        result.validation[0] == "validation at step 6"
        and "uniform ppl 1000" in result.validation[1]
    )
    assert os.path.exists(val[-1]["pngs"]["pusht"])
    assert any("tfevents" in f for f in os.listdir(result.tensorboard_dir))


def test_two_worker_rendezvous_listens_on_loopback_only(reference):
    """The process group's store and gloo bind 127.0.0.1: nothing a run starts listens beyond."""
    listeners = reference[2]
    print("listeners opened during the 2-worker run:")
    for ip, port, pid in sorted({(e.ip, e.port, e.pid or 0) for e in listeners}):
        print(f"  {ip}:{port}  pid {pid}")
    assert any("RayTrainWorker" in e.process for e in listeners), "saw no training worker listen"
    assert [e for e in listeners if not e.loopback] == []


def test_resume_from_s3_continues_exactly(reference, data, s3_bucket):
    _, ref, _ = reference
    config = _config(data, f"{s3_bucket}/runs", max_steps=3)
    first = run_pretrain(config, echo=False)
    assert first.checkpoint.startswith(f"{s3_bucket}/runs/{config.name}/checkpoint_")
    assert ckpt.read_meta(first.checkpoint)["step"] == 3
    resumed = run_pretrain(config.model_copy(update={"max_steps": 6}), echo=False)
    assert any("resumed at step 3" in r.get("message", "") for r in resumed.records)
    got, want = _losses(resumed), _losses(ref)
    assert sorted(got) == [4, 5, 6]
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-6), step
    assert _losses(first) == pytest.approx({s: want[s] for s in (1, 2, 3)}, rel=1e-6)


def _kill_a_worker_after_checkpoint(run_dir: str, job_id: str, killed: list) -> None:
    """SIGKILL one training worker as soon as Ray Train has registered a checkpoint of the run."""
    from ray._private import state

    snapshot = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(snapshot):
            for actor in state.actors(
                job_id=ray.JobID.from_hex(job_id), actor_state_name="ALIVE"
            ).values():
                if "RayTrainWorker" in actor["ActorClassName"] and actor["Pid"]:
                    os.kill(actor["Pid"], signal.SIGKILL)
                    killed.append(actor["Pid"])
                    return
        time.sleep(0.02)


def test_a_killed_worker_restarts_from_the_last_checkpoint(data):
    steps = 40
    config = _config(
        data,
        str(data["root"] / "runs"),
        max_steps=steps,
        checkpoint_every=2,
        optim={"lr": 1e-3, "warmup_steps": 2},
        validation={"every": steps, "rollouts": 0},
    )
    run_dir = str(data["root"] / "runs" / config.name)
    killed: list[int] = []
    job = ray.get_runtime_context().get_job_id()
    killer = threading.Thread(target=_kill_a_worker_after_checkpoint, args=(run_dir, job, killed))
    killer.start()
    result = run_pretrain(config, echo=False)
    killer.join()
    assert killed, "no worker was killed"
    resumed = [r["message"] for r in result.records if "resumed at step" in r.get("message", "")]
    assert len(resumed) == 1, [r.get("message") for r in result.records if "message" in r]
    at = int(resumed[0].split("resumed at step ")[1].split()[0])
    assert 2 <= at < steps and at % 2 == 0
    assert ckpt.read_meta(result.checkpoint)["step"] == steps
    seen: dict[int, list[float]] = {}
    for r in result.records:
        if "loss" in r:
            seen.setdefault(r["step"], []).append(r["loss"])
    assert sorted(seen) == list(range(1, steps + 1))
    assert all(len(v) == 1 for s, v in seen.items() if s <= at)  # nothing before it re-ran
    # steps re-run after the restart repeat the lost attempt's losses exactly
    for s, v in seen.items():
        assert v == pytest.approx([v[0]] * len(v), rel=1e-6, abs=1e-6), s


def test_a_checkpoint_of_another_tokenizer_is_refused(reference, data, tmp_path):
    _, ref, _ = reference
    other = data["info"]
    other = type(other)(**{**other.__dict__, "fingerprint": "0" * 64})
    store = write_store(str(tmp_path / "other.zarr"), other, {"pusht": 2})
    config = PretrainConfig.model_validate(
        tiny_config([store], str(tmp_path), "ft", init_from=ref.checkpoint)
    )
    with pytest.raises(checkpoint.CheckpointError) as err:
        plan(config)
    message = str(err.value)
    assert data["info"].fingerprint in message and "0" * 64 in message and store in message


def test_finetune_adds_a_new_dataset_and_can_freeze_the_trunk(reference, data):
    _, ref, _ = reference
    config = PretrainConfig.model_validate(
        tiny_config(
            [data["extra"]],
            str(data["root"] / "runs"),
            f"ft-{uuid.uuid4().hex[:8]}",
            init_from=str(data["root"] / "runs" / reference[0].name),
            freeze_trunk=True,
            num_workers=1,
            max_steps=2,
            checkpoint_every=2,
            validation={"every": 2, "windows": 2, "rollouts": 0},
        )
    )
    decided = plan(config)
    assert decided.new_datasets == ["tabletop"]
    result = run_pretrain(config, echo=False)
    before = load_model(ckpt.model_url(ref.checkpoint))
    after = load_model(ckpt.model_url(result.checkpoint))
    assert set(after.config.datasets) == {"pusht", "robosuite_lift", "tabletop"}
    trunk = dict(after.blocks.named_parameters())
    assert all(torch.equal(p, trunk[n]) for n, p in before.blocks.named_parameters())
    tabletop = after.embodiments.stems["tabletop"][0].weight
    assert tabletop.shape[1] == 2 and torch.isfinite(tabletop).all()
    assert ckpt.read_meta(result.checkpoint)["init_from"] == ref.checkpoint
