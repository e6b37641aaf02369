"""Shared fixtures: one loopback Ray cluster per session, a moto S3 server on 127.0.0.1, episodes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from hma.envs.procedural import moving_block_frames
from hma.episodes import Episode, load_registry


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[str]:
    """A local Ray cluster bound to 127.0.0.1, shared by the whole session.

    It starts after the S3 server so its workers inherit the endpoint and dummy credentials,
    as workers of a real cluster carry their own S3 settings."""
    from hma.pipeline.cluster import LocalClusterConfig, connect, shutdown

    address = connect(local=LocalClusterConfig(num_cpus=2))
    yield address
    shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 protocol server (moto) on 127.0.0.1 with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh bucket; returns its s3:// URL."""
    import boto3

    name = f"hma-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def make_episode() -> Callable[..., Episode]:
    """Build a valid Episode for `dataset` (registry action dim), `steps` long, `size` px frames."""
    registry = load_registry()

    def make(
        dataset: str = "robosuite_lift",
        steps: int = 12,
        size: int = 64,
        seed: int = 0,
        split: str = "train",
        **kwargs,
    ) -> Episode:
        spec = registry.get(dataset)
        rng = np.random.default_rng(seed)
        fields = dict(
            dataset=dataset,
            episode_id=f"{dataset}-{seed}",
            split=split,
            frames=moving_block_frames(steps, size, seed),
            actions=rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32),
            state=rng.normal(0, 1, (steps, 9)).astype(np.float32),
            hz=spec.hz,
            instruction=f"push the red block {seed}",
            success=bool(seed % 2),
        )
        fields.update(kwargs)
        return Episode(**fields)

    return make
