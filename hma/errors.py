"""Error types a user can cause. Each message names the culprit (file, dataset, episode, key or field).

The CLI prints these as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class HmaError(Exception):
    """Base class of every error that bad input or a bad config can cause."""


class ConfigError(HmaError, ValueError):
    """A config or registry file is unreadable or invalid."""


class EpisodeError(HmaError, ValueError):
    """An episode breaks the Episode schema; names dataset, episode and field."""

    def __init__(self, dataset: str, episode_id: str, field: str, problem: str):
        self.dataset = dataset
        self.episode_id = episode_id
        self.field = field
        self.problem = problem
        super().__init__(f"dataset {dataset!r}, episode {episode_id!r}, field {field!r}: {problem}")


class FormatError(HmaError, ValueError):
    """A source on disk is not in the format expected, or is damaged; names the file."""


class UnsafePathError(HmaError, ValueError):
    """A path built from input (a dataset name, a file template) would leave its root directory."""
