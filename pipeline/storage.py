"""Object storage plumbing: one place that turns a URI + fsspec options into filesystems."""

from __future__ import annotations

import json
import posixpath

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem


def has_scheme(uri: str) -> bool:
    return "://" in uri


def join(uri: str, *parts: str) -> str:
    return posixpath.join(uri.rstrip("/"), *parts)


def dirname(uri: str) -> str:
    return posixpath.dirname(uri.rstrip("/"))


def fsspec_fs(uri: str, storage_options: dict | None = None):
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def arrow_fs(uri: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the scheme-less path, for Ray Data readers and writers.

    Wrapping fsspec keeps one set of options (endpoint, credentials) for every reader, including
    S3-compatible servers that pyarrow's own S3 client would need configured separately.
    """
    fs, path = fsspec_fs(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def write_json(uri: str, payload: dict, storage_options: dict | None = None) -> None:
    fs, path = fsspec_fs(uri, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=False, default=str))


def read_json(uri: str, storage_options: dict | None = None) -> dict:
    fs, path = fsspec_fs(uri, storage_options)
    with fs.open(path, "r") as f:
        return json.load(f)


def remove_prefix(uri: str, storage_options: dict | None = None) -> None:
    fs, path = fsspec_fs(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


_NAME_LIMIT = 200  # bytes; most filesystems and object stores allow 255 per path segment


def safe_name(row_id: str) -> str:
    """A file name made from a row id that cannot leave its directory: ``/``, ``\\``, control
    characters and ``%`` are percent-encoded, a leading dot too (no ``..``, no hidden files), and
    over-long names are cut and given a hash of the full id so they stay unique."""
    import hashlib
    from urllib.parse import quote

    name = quote(row_id, safe=" -_.,@+=()[]~")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if not name:
        name = "%"  # quote() never yields a bare "%", so no other id maps here
    if len(name.encode()) > _NAME_LIMIT:
        digest = hashlib.sha256(row_id.encode()).hexdigest()[:16]
        name = name[: _NAME_LIMIT - 17] + "-" + digest
    return name

