"""LeRobot v3's on-disk layout, as `lerobot` writes it: paths, reserved feature names, the
defaults of its writer, and reading a per-frame column. The reader (lerobot.py) and the writer
(lerobot_writer.py) both follow it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
# LeRobot's defaults (lerobot/datasets/utils.py).
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200

ACTION = "action"
STATE = "observation.state"
IMAGES_PREFIX = "observation.images."
# Per-frame columns every LeRobot dataset has (lerobot/utils/constants.py DEFAULT_FEATURES).
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
RESERVED = {ACTION, STATE, *DEFAULT_FEATURES}
# Our extra key in info.json (LeRobot ignores unknown keys).
HMA_KEY = "hma"


def column_array(table: pa.Table, key: str, dtype: np.dtype) -> np.ndarray:
    """A per-frame column as [T] (scalars) or [T, K] (fixed-size lists) numpy array."""
    col = table.column(key).combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1).astype(dtype, copy=False)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
