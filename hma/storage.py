"""Where bytes live: one place that turns a URL (local path, file://, s3://) into an fsspec filesystem.

S3 settings come from the usual AWS environment (credentials, region) plus `AWS_ENDPOINT_URL` for
S3-compatible stores (MinIO, a moto server in tests). Credentials are never logged.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from hma.errors import UnsafePathError

ENDPOINT_ENV = "AWS_ENDPOINT_URL"


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for `url`; for s3:// the endpoint from $AWS_ENDPOINT_URL, if set."""
    if url.startswith("s3://") and os.environ.get(ENDPOINT_ENV):
        return {"endpoint_url": os.environ[ENDPOINT_ENV]}
    return {}


def unreachable(error: BaseException) -> bool:
    """True for an error that says the object store's endpoint could not be reached (a wrong
    AWS_ENDPOINT_URL, no network): the user's setting to fix, not a bug to trace."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # no S3 support installed: nothing of ours raised it
        return False
    return isinstance(error, BotoConnectionError)


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem holding `url` and the path of `url` within it."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def absolute(url: str) -> str:
    """A local path made absolute against this process's working directory; remote URLs as given.

    Config paths are fixed on the driver: Ray Train workers run in a directory of their own, where
    a relative path would point somewhere else."""
    if is_remote(url):
        return url
    return os.path.abspath(local_path(url))


def local_path(url: str) -> str:
    """The filesystem path of a local URL (a plain path or file://), for libraries that need one."""
    return url.removeprefix("file://")


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL without mangling the scheme."""
    if is_remote(url):
        return posixpath.join(url, *parts)
    return os.path.join(url, *parts)


def child(root: str, *parts: str) -> str:
    """`parts` joined under `root`, refusing any result outside it: every writer (and reader of
    paths a file names) builds paths from input this way, so a dataset name or template such as
    `../../x` cannot reach beyond the destination."""
    given = posixpath.join(*parts) if parts else "."
    rel = posixpath.normpath(given)
    if rel == ".." or rel.startswith("../") or posixpath.isabs(rel) or "://" in given:
        raise UnsafePathError(f"{root}: {given!r} would leave this directory")
    return join(root, rel)


def basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def isdir(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.isdir(path)


def makedirs(url: str) -> None:
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)


def open_file(url: str, mode: str = "rb"):
    """Open one file for streaming reads or writes (a context manager)."""
    return fsspec.open(url, mode, **storage_options(url))


def read_fresh(url: str) -> bytes:
    """The whole file at `url`, read past this process's cached listings: for files another
    process (a Ray worker) wrote after this one last listed their directory (s3fs answers
    "not found" from a stale listing otherwise)."""
    fs, path = filesystem(url)
    fs.invalidate_cache(posixpath.dirname(path.rstrip("/")))
    return fs.cat_file(path)


def read_json(url: str, error: type[Exception], missing: str) -> Any:
    """The JSON document at `url`; a missing or damaged file raises `error` naming it."""
    try:
        with open_file(url, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{url}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{url}: not valid JSON ({e})") from None


def write_png(image: Any, url: str) -> None:
    """Save a uint8 [H, W, 3] array as a PNG at `url` (local or remote)."""
    from PIL import Image

    with open_file(url, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


INCOMPLETE = ".incomplete"  # suffix of a local destination being written


@contextmanager
def staged_destination(url: str) -> Iterator[str]:
    """Where to write a new dataset (a file or a directory) that must appear at `url` whole or
    not at all. Locally: a hidden sibling, renamed onto `url` when the block ends without error
    and removed when it fails; one left by a killed run is cleared by the next. On an object
    store: `url` itself (a single-file upload appears whole on PUT; a directory cannot be
    renamed there, so readers rely on the format's own last-written file)."""
    if is_remote(url):
        yield url
        return
    final = os.path.abspath(local_path(url.rstrip("/")))
    name = os.path.basename(final)
    # the same base name inside a hidden sibling: writers may read it (an RLDS version directory)
    holder = os.path.join(os.path.dirname(final), f".{name}{INCOMPLETE}")
    _remove_local(holder)
    os.makedirs(holder)
    try:
        yield os.path.join(holder, name)
        os.replace(os.path.join(holder, name), final)  # callers refuse existing destinations
    finally:
        _remove_local(holder)


def _remove_local(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextmanager
def local_copy_for_writing(url: str, suffix: str = "") -> Iterator[str]:
    """A local path to write a file that libraries can only write locally (HDF5), uploaded on exit.

    For a local `url` it is the destination itself; for a remote one, a temporary file that is
    uploaded when the block ends without error.
    """
    if not is_remote(url):
        path = local_path(url)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        yield path
        return
    tmpdir = tempfile.mkdtemp(prefix="hma-upload-")
    try:
        local = os.path.join(tmpdir, "file" + suffix)
        yield local
        fs, path = filesystem(url)
        fs.put_file(local, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
