"""One recording's bytes as the decoders read them: a local path, an fsspec file object or
embedded bytes, with its head for the content probe and windows onto parts of it (the PCM data
of a WAV with unwritten sizes, an MP3 after leading zeros, one link of a chained Ogg file)."""

from __future__ import annotations

import io
from typing import BinaryIO


class Fetch:
    """A remote file as libsndfile reads it, keeping the error a read raised.

    libsndfile's I/O callbacks cannot raise: an exception there is printed and taken for the end
    of the file, so a fetch that failed after its retries would pass for a corrupt, unrecognised
    or (worse) shorter recording. The read ends instead and `raise_failure` raises the real error.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._error is None:
            try:
                return self._f.read(size)
            except Exception as e:
                self._error = e
        return b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def raise_failure(self) -> None:
        if self._error is not None:
            raise self._error


class Window:
    """Bytes [start, end) of a seekable file object, as a file object of their own."""

    def __init__(self, f: BinaryIO, start: int, end: int) -> None:
        self._f, self._start, self._end = f, start, end
        self._pos = start

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._f.seek(self._pos)
        data = self._f.read(size)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: self._start, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = min(max(self._start, base + offset), self._end)
        return self._pos - self._start

    def tell(self) -> int:
        return self._pos - self._start

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class Input:
    """A recording of ``size`` bytes: exactly one of ``path`` (local), ``fileobj`` (a remote file,
    wrapped in ``Fetch``) or ``data`` (embedded bytes)."""

    def __init__(self, *, size: int, path: str | None = None, fileobj: Fetch | None = None, data: bytes | None = None) -> None:
        self.size, self.path, self.fileobj, self.data = size, path, fileobj, data
        self._local: BinaryIO | None = None

    def _file(self) -> BinaryIO:
        """The file object behind reads and windows; one per local file, opened once (every
        user seeks before it reads: ``read_at`` and ``Window`` do)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        if self.fileobj is not None:
            return self.fileobj  # type: ignore[return-value]
        if self._local is None:
            self._local = open(self.path, "rb")  # noqa: SIM115  closed by close()
        return self._local

    def read_at(self, start: int, size: int) -> bytes:
        if self.data is not None:
            return self.data[start : start + size]
        f = self._file()
        f.seek(start)
        return f.read(size)

    def head(self, size: int) -> bytes:
        return self.read_at(0, size)

    def tail(self, size: int) -> bytes:
        return self.read_at(max(0, self.size - size), size)

    def whole(self) -> bytes:
        return self.data if self.data is not None else self.read_at(0, self.size)

    def source(self) -> str | BinaryIO:
        """For a decoder: the local path (the decoders' own file I/O is faster than a Python file
        object) or a file object at its start."""
        if self.path is not None:
            return self.path
        f = self._file()
        f.seek(0)
        return f

    def window(self, start: int, end: int) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(memoryview(self.data)[start:end])
        return Window(self._file(), start, end)  # type: ignore[return-value]

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
