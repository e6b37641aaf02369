"""The token store (zarr v3, local or s3://): what the tokenize pipeline writes and training reads.

    layout.py    where things live in a store; the small I/O its writer and reader share
    writer.py    create a store, write one unit per Ray task (committed last), finalize on the driver
    reader.py    committed units only: the episode index, datasets' views, random windows
    summary.py   counts, `hma store inspect`, a decoded strip

The names below are the store's API; `from hma.pipeline import store` then `store.write_unit(...)`.
"""

from hma.pipeline.store.layout import StoreError, TokenizerInfo
from hma.pipeline.store.reader import DatasetView, TokenStore, WindowSampler
from hma.pipeline.store.summary import DatasetCounts, StoreSummary, decode_strip, inspect_store
from hma.pipeline.store.writer import (
    EncodedEpisode,
    Rejection,
    committed_episodes,
    committed_units,
    create_store,
    finalize,
    write_unit,
)

__all__ = [
    "DatasetCounts",
    "DatasetView",
    "EncodedEpisode",
    "Rejection",
    "StoreError",
    "StoreSummary",
    "TokenStore",
    "TokenizerInfo",
    "WindowSampler",
    "committed_episodes",
    "committed_units",
    "create_store",
    "decode_strip",
    "finalize",
    "inspect_store",
    "write_unit",
]
