"""A lease lock in object storage, so that two runs of a scheduled job never work at once.

The lock is one small JSON object (owner, host, pid, acquired and heartbeat times). Every change to
it is a compare-and-swap on the storage itself, never read-then-write:

- acquire: create only if absent (S3 `If-None-Match: *`; locally a hard link, which fails if the
  name exists);
- heartbeat: while the run goes on, a thread rewrites it only if it is still the version we wrote
  (S3 `If-Match: <ETag>`; locally a compare under an flock'd guard file);
- takeover: a lock whose heartbeat is older than `stale_after_s` belongs to a holder that died;
  it is replaced with `If-Match` on the ETag that was judged stale, so of several runs that saw
  the same stale lock exactly one gets it, and a holder that comes back to life finds its next
  heartbeat refused and knows it lost the lock;
- release: delete only if still ours (`If-Match`).

Staleness compares the holder's heartbeat time with this machine's clock: clocks must agree to
well within `stale_after_s` (NTP does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from fsspec.implementations.local import LocalFileSystem

from pipeline.io import storage

logger = logging.getLogger(__name__)


class LockError(RuntimeError):
    """The lock cannot be used safely on this storage."""


class LockLost(RuntimeError):
    """Another run took the lock over (ours looked stale to it): this run must not commit."""


@dataclass(frozen=True)
class Stored:
    data: bytes
    token: str  # what a conditional replace or delete must match (an ETag, a content hash)
    modified: float  # epoch seconds, by the storage's clock


class ConditionalStore(Protocol):
    """Objects that are only ever created, replaced or deleted on a condition."""

    def create(self, path: str, data: bytes) -> str | None:
        """Write if absent; the new token, or None if something is there already."""

    def read(self, path: str) -> Stored | None: ...

    def replace(self, path: str, data: bytes, token: str) -> str | None:
        """Overwrite if the stored version still has `token`; the new token, or None."""

    def delete(self, path: str, token: str) -> bool:
        """Delete if the stored version still has `token`; whether it was deleted."""


# --- S3 -------------------------------------------------------------------------------------------


def _s3_code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs exception ('' if it did not come from S3)."""
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


# 409 ConditionalRequestConflict: S3 saw a concurrent conditional write to the same key; like a
# 412 it means "not yours, read again".
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class S3Store:
    """Conditional writes through s3fs (`If-None-Match` / `If-Match` on PutObject and DeleteObject).

    AWS S3, MinIO and moto honour these headers; `check()` proves it on the live endpoint, since a
    server that ignored them would make every run believe it holds the lock.
    """

    def __init__(self, fs) -> None:
        self.fs = fs

    def _split(self, path: str) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(path)
        return bucket, key

    def create(self, path: str, data: bytes) -> str | None:
        bucket, key = self._split(path)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except FileExistsError:
            return None
        except OSError as e:
            if _s3_code(e) in _LOST_RACE:
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)
        return out["ETag"]

    def read(self, path: str) -> Stored | None:
        from fsspec.asyn import sync

        bucket, key = self._split(path)

        async def get():
            # One GET gives body and ETag together: a HEAD then a GET could pair one version's
            # ETag with another version's body.
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                return await body.read(), resp["ETag"], resp["LastModified"].timestamp()

        try:
            data, etag, modified = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        return Stored(data, etag, modified)

    def replace(self, path: str, data: bytes, token: str) -> str | None:
        bucket, key = self._split(path)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=token)
        except FileNotFoundError:
            return None
        except OSError as e:
            if _s3_code(e) in _LOST_RACE:
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)
        return out["ETag"]

    def delete(self, path: str, token: str) -> bool:
        bucket, key = self._split(path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=token)
        except FileNotFoundError:
            return False
        except OSError as e:
            if _s3_code(e) in _LOST_RACE:
                return False
            raise
        finally:
            self.fs.invalidate_cache(path)
        return True

    def check(self, near: str) -> None:
        """Fail unless the endpoint refuses a second create and a replace with a wrong ETag."""
        probe = f"{near}.probe-{uuid.uuid4().hex[:12]}"
        token = self.create(probe, b"probe")
        try:
            if token is None:
                raise LockError(f"cannot create the probe object {probe}")
            if self.create(probe, b"again") is not None:
                raise LockError(
                    "this S3 endpoint ignores If-None-Match on PutObject: a lock kept there would not "
                    "keep two runs apart (AWS S3 and MinIO honour it)"
                )
            if self.replace(probe, b"again", '"0123456789abcdef0123456789abcdef"') is not None:
                raise LockError("this S3 endpoint ignores If-Match on PutObject: stale-lock takeover would not be safe")
        finally:
            bucket, key = self._split(probe)
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key)


# --- local disk -----------------------------------------------------------------------------------


class LocalStore:
    """The same operations on a local (or flock-capable shared) filesystem.

    Objects are written to a temporary name first, so a reader never sees half a file. Create is a
    hard link (fails if the name exists); replace and delete compare and act under an exclusive
    flock on `<path>.guard`, which a crashed process releases with its file descriptors.
    """

    @staticmethod
    def _token(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def _write_temp(path: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _guard(self, path: str):
        fd = os.open(f"{path}.guard", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def create(self, path: str, data: bytes) -> str | None:
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        return self._token(data)

    def read(self, path: str) -> Stored | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
                modified = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return Stored(data, self._token(data), modified)

    def replace(self, path: str, data: bytes, token: str) -> str | None:
        fd = self._guard(path)
        try:
            current = self.read(path)
            if current is None or current.token != token:
                return None
            os.replace(self._write_temp(path, data), path)
            return self._token(data)
        finally:
            os.close(fd)

    def delete(self, path: str, token: str) -> bool:
        fd = self._guard(path)
        try:
            current = self.read(path)
            if current is None or current.token != token:
                return False
            os.unlink(path)
            return True
        finally:
            os.close(fd)

    def check(self, near: str) -> None:
        pass


def open_store(uri: str, storage_options: dict | None = None) -> tuple[ConditionalStore, str]:
    """The conditional store for `uri` and the scheme-less path to use with it."""
    fs, path = storage.fsspec_fs(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        return LocalStore(), path
    if type(fs).__name__ == "S3FileSystem":
        return S3Store(fs), path
    raise LockError(f"{uri}: conditional writes are implemented for s3:// and local paths only")


# --- the lock -------------------------------------------------------------------------------------


def _now_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def describe_holder(holder: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = now - float(holder.get("heartbeat_epoch", now))
    return (
        f"run {holder.get('run_id', '?')} on {holder.get('host', '?')} (pid {holder.get('pid', '?')}), "
        f"acquired {holder.get('acquired_at', '?')}, last heartbeat {age:.0f} s ago"
    )


class RunLock:
    """One holder at a time for `path` in `store`; see the module docstring for the protocol.

    Use: `if lock.acquire(wait_s): try: ...; lock.confirm(); commit ... finally: lock.release()`.
    """

    def __init__(
        self,
        store: ConditionalStore,
        path: str,
        *,
        run_id: str,
        stale_after_s: float,
        heartbeat_s: float,
        poll_s: float = 5.0,
    ) -> None:
        self.store = store
        self.path = path
        self.run_id = run_id
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.owner = uuid.uuid4().hex
        self.acquired_at: float | None = None
        self.holder: dict | None = None  # the other holder, when acquire gave up
        self.took_over: dict | None = None  # the stale holder replaced, if any
        self._token: str | None = None
        self._mutex = threading.Lock()  # one conditional write at a time from this process
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "owner": self.owner,
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": _now_iso(self.acquired_at or now),
                "heartbeat_at": _now_iso(now),
                "heartbeat_epoch": now,
                "stale_after_s": self.stale_after_s,
            }
        ).encode()

    @staticmethod
    def _parse(stored: Stored) -> dict:
        try:
            holder = json.loads(stored.data)
            float(holder["heartbeat_epoch"])
            return holder
        except (ValueError, KeyError, TypeError):
            # Unreadable (written by something else, or cut short by a non-atomic store): age it
            # by the time the storage last changed it.
            return {"heartbeat_epoch": stored.modified, "unreadable": True}

    def _stale(self, holder: dict, now: float) -> bool:
        return now - float(holder["heartbeat_epoch"]) > self.stale_after_s

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lock, waiting up to `wait_s` for the holder to finish or go stale."""
        self.store.check(self.path)
        deadline = time.monotonic() + wait_s
        waiting_on = None
        while True:
            self.acquired_at = time.time()
            token = self.store.create(self.path, self._payload())
            if token is not None:
                return self._held(token)
            current = self.store.read(self.path)
            if current is None:
                continue  # released between our create and read: try again at once
            holder = self._parse(current)
            if holder.get("owner") == self.owner:
                # Our create did land, and a retry after a lost response was refused.
                return self._held(current.token)
            if self._stale(holder, time.time()):
                token = self.store.replace(self.path, self._payload(), current.token)
                if token is not None:
                    self.took_over = holder
                    logger.warning("took over a stale lock %s: %s", self.path, describe_holder(holder))
                    return self._held(token)
                continue  # someone else changed it first: look again
            self.holder = holder
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if holder.get("owner") != waiting_on:
                waiting_on = holder.get("owner")
                logger.info(
                    "lock %s is held by %s; waiting up to %.0f s", self.path, describe_holder(holder), remaining
                )
            time.sleep(min(self.poll_s, remaining))

    def _held(self, token: str) -> bool:
        self._token = token
        self.holder = None
        self._stop.clear()
        self._lost.clear()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> bool:
        """One conditional heartbeat; False if the lock is no longer ours."""
        with self._mutex:
            if self._token is None or self._lost.is_set():
                return False
            token = self.store.replace(self.path, self._payload(), self._token)
            if token is None:
                token = self._still_ours()
            if token is None:
                self._lost.set()
                logger.error("lost the lock %s: another run took it over", self.path)
                return False
            self._token = token
            return True

    def _still_ours(self) -> str | None:
        """The current token if the stored lock is ours after all: a write whose response was lost
        and whose retry was then refused (its condition was the version it had just replaced)."""
        current = self.store.read(self.path)
        if current is not None and self._parse(current).get("owner") == self.owner:
            return current.token
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._refresh():
                    return
            except Exception as e:  # a network blip: the next beat tries again
                logger.warning("lock heartbeat failed (%s); retrying in %.0f s", e, self.heartbeat_s)

    def confirm(self) -> None:
        """Refresh now and raise LockLost unless the lock is still ours.

        Call right before an irreversible step (the commit): a run that looked stale to another
        one finds out here, and after a successful refresh nobody can find the lock stale for
        another `stale_after_s`.
        """
        if not self._refresh():
            raise LockLost(f"the lock {self.path} is no longer held by run {self.run_id}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._mutex:
            if self._token is None:
                return
            try:
                if not self._lost.is_set() and not self.store.delete(self.path, self._token):
                    token = self._still_ours()
                    if token is None or not self.store.delete(self.path, token):
                        logger.warning("lock %s was not ours any more at release; left in place", self.path)
            except Exception as e:
                # Never mask the run's own outcome: a lock left behind goes stale and is taken over.
                logger.warning(
                    "could not release the lock %s (%s); it expires after %.0f s", self.path, e, self.stale_after_s
                )
            finally:
                self._token = None


def read_holder(store: ConditionalStore, path: str) -> dict | None:
    stored = store.read(path)
    return None if stored is None else RunLock._parse(stored)

