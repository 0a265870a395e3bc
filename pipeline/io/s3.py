"""s3fs with its own retry count as a constructor option.

s3fs keeps `retries` as a class attribute, so `storage_options` cannot set it, and a value set on
an instance would be lost when Ray pickles the filesystem into a worker (fsspec rebuilds it from
its constructor arguments). As an argument it travels with the options and is part of fsspec's
instance-cache key.
"""

from __future__ import annotations

import s3fs


class S3FileSystem(s3fs.S3FileSystem):
    def __init__(self, *args, retries: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if retries is not None:
            if int(retries) < 1:
                raise ValueError(f"storage_options retries must be >= 1 (1: no retry by s3fs), got {retries}")
            self.retries = int(retries)
