"""One torch thread for tiny models: they run fastest single-threaded, above all on a shared CPU,
and fp32 results then repeat to the last bit (the golden loss curves rely on it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
