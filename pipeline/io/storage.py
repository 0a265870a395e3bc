"""Object storage plumbing: one place that turns a URI + fsspec options into filesystems."""

from __future__ import annotations

import functools
import json
import os
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


def _is_s3(uri: str) -> bool:
    return uri.partition("://")[0].lower() in ("s3", "s3a")


# Two layers retry an S3 request, and their counts multiply: botocore retries 5xx replies,
# throttling, timeouts and refused or dropped connections (standard mode: jittered exponential
# backoff, and a per-client retry budget that stops retrying when most requests fail, so an outage
# is not met with a retry storm); around it, s3fs (`retries`, tries per call) re-issues a GET
# whose body was cut off, resuming where it stopped, and a request botocore gave up on with
# SlowDown, a timeout or a dropped connection. 403 and 404 are retried by neither. A GET answering
# SlowDown for good is tried S3_RETRIES x total_max_attempts times (12, about 10 s) before the
# read fails; one that never answers, S3_RETRIES**2 x total_max_attempts times (s3fs nests its
# retries for reads), each after read_timeout.
S3_RETRIES = 3
S3_CONFIG = {
    "connect_timeout": 5,
    # Seconds without a byte from the server (not the whole transfer): a stalled response is
    # retried instead of holding a decode task.
    "read_timeout": 15,
    "retries": {"mode": "standard", "total_max_attempts": 4},
}


def options_for(uri: str, storage_options: dict | None = None) -> dict:
    """``storage_options`` for ``uri`` with the retry and timeout defaults above filled in for
    s3://; every key the user set (and AWS_RETRY_MODE / AWS_MAX_ATTEMPTS) wins."""
    options = dict(storage_options or {})
    if not _is_s3(uri):
        return options
    options.setdefault("retries", S3_RETRIES)
    config = dict(options.get("config_kwargs") or {})
    for key in ("connect_timeout", "read_timeout"):
        config.setdefault(key, S3_CONFIG[key])
    if "retries" not in config:
        retries = dict(S3_CONFIG["retries"])
        if os.environ.get("AWS_RETRY_MODE"):
            retries.pop("mode")
        if os.environ.get("AWS_MAX_ATTEMPTS"):
            retries.pop("total_max_attempts")
        config["retries"] = retries
    options["config_kwargs"] = config
    return options


@functools.cache
def transport_errors() -> tuple[type[Exception], ...]:
    """What the storage clients raise, besides OSError, for a request that failed in transit
    after their own retries (a body cut off, a closed connection): a storage failure, not a bug."""
    import http.client

    errors: list[type[Exception]] = [http.client.HTTPException]
    try:
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        errors.append(ClientError)
    except ImportError:
        pass
    return tuple(errors)


def fsspec_fs(uri: str, storage_options: dict | None = None):
    options = options_for(uri, storage_options)
    if _is_s3(uri) and "::" not in uri:
        from pipeline.io.s3 import S3FileSystem  # s3fs takes seconds to import: only when used

        fs = S3FileSystem(**options)
        return fs, fs._strip_protocol(uri)
    fs, path = fsspec.core.url_to_fs(uri, **options)
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


def write_parquet_atomic(table, uri: str, storage_options: dict | None = None) -> None:
    """One Parquet file that readers see whole or not at all.

    Object stores publish an object only when its upload completes. On a local disk the file is
    written under a dot-name (which Parquet readers skip) and renamed into place.
    """
    import io
    import os
    import uuid

    import pyarrow.parquet as pq

    fs, path = fsspec_fs(uri, storage_options)
    parent = posixpath.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return
    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs.pipe_file(path, buf.getvalue())


def parquet_files(uri: str, storage_options: dict | None = None) -> list[str]:
    """Complete Parquet files under a prefix (dot- and underscore-names are in-progress or
    metadata files, as for every Parquet reader)."""
    fs, path = fsspec_fs(uri, storage_options)
    fs.invalidate_cache()  # what other processes wrote since this one last listed counts
    if not fs.exists(path):
        return []
    return sorted(
        f for f in fs.find(path) if f.endswith(".parquet") and not posixpath.basename(f).startswith((".", "_"))
    )


def remove_prefix(uri: str, storage_options: dict | None = None) -> None:
    fs, path = fsspec_fs(uri, storage_options)
    fs.invalidate_cache()  # a stale child listing would leave files behind
    if fs.exists(path):
        fs.rm(path, recursive=True)


_NAME_LIMIT = 200  # bytes; most filesystems and object stores allow 255 per path segment


def safe_name(row_id: str) -> str:
    """A file name made from a row id that cannot leave its directory and that no other id shares,
    also on case-insensitive filesystems (macOS, Windows, some mounted buckets).

    ``/``, ``\\``, ``!``, control characters, non-ASCII and ``%`` are percent-encoded (always with
    upper-case hex), a leading dot too (no ``..``, no hidden files); every upper-case ASCII letter
    becomes ``!`` and its lower-case letter (the Go module proxy's case encoding), so ``Foo`` and
    ``foo`` give ``!foo`` and ``foo``. Over-long names are cut and given a hash of the full id so
    they stay unique. E.g. ``"Spk1/Utt 01"`` -> ``"!spk1%2F!utt 01"``.
    """
    import hashlib
    from urllib.parse import quote

    name = "".join(f"!{ch.lower()}" if "A" <= ch <= "Z" else quote(ch, safe=" -_.,@+=()[]~") for ch in row_id)
    if name.startswith("."):
        name = "%2E" + name[1:]
    if not name:
        name = "%"  # quote() never yields a bare "%", so no other id maps here
    if len(name.encode()) > _NAME_LIMIT:
        digest = hashlib.sha256(row_id.encode()).hexdigest()[:16]
        name = name[: _NAME_LIMIT - 17] + "-" + digest
    return name

