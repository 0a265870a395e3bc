"""Where model weights come from: a hub id, a local directory, or an object-storage prefix.

An object-storage prefix is copied once per node into a local cache. Several actors on one node
start at the same time, so the copy is guarded by a file lock and published with an atomic
rename: nobody ever reads a half-written directory, and nobody downloads it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path

_REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://")
_COMPLETE_MARKER = ".complete"


class ModelSourceError(RuntimeError):
    pass


def is_remote(model: str) -> bool:
    return model.startswith(_REMOTE_SCHEMES)


def _cache_dir_for(model: str, cache_root: str) -> Path:
    digest = hashlib.sha256(model.rstrip("/").encode()).hexdigest()[:16]
    name = model.rstrip("/").rsplit("/", 1)[-1] or "model"
    return Path(cache_root) / f"{name}-{digest}"


def _copy_prefix(model: str, dest: Path, storage_options: dict) -> int:
    from pipeline.io import storage
    fs, root = storage.fsspec_fs(model.rstrip("/"), storage_options)
    files = [f for f in fs.find(root) if not f.endswith("/")]
    if not files:
        raise ModelSourceError(f"model prefix {model} holds no files")
    for remote in files:
        rel = remote[len(root):].lstrip("/")
        local = dest / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    return len(files)


def resolve_model(model: str, cache_root: str, storage_options: dict | None = None) -> str:
    """Return what vLLM should load: a local directory, or the hub id unchanged.

    Hub ids are left to vLLM / huggingface_hub, whose cache already locks per file.
    """
    if is_remote(model):
        return str(sync_remote_model(model, cache_root, storage_options or {}))
    local = Path(model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelSourceError(f"model directory {local} has no config.json")
        return str(local.resolve())
    if model.startswith(("/", "./", "../")) or model.count("/") != 1:
        raise ModelSourceError(
            f"model '{model}' is neither an existing directory, an s3:// or gs:// prefix, "
            "nor a hub id like 'Qwen/Qwen3-ASR-0.6B'"
        )
    return model


def sync_remote_model(model: str, cache_root: str, storage_options: dict) -> Path:
    dest = _cache_dir_for(model, cache_root)
    if (dest / _COMPLETE_MARKER).exists():
        return dest
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    lock_path = dest.with_name(dest.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other actors on this node wait here
        try:
            if (dest / _COMPLETE_MARKER).exists():
                return dest
            staging = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            start = time.monotonic()
            try:
                count = _copy_prefix(model, staging, storage_options)
            except ModelSourceError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            except Exception as e:
                shutil.rmtree(staging, ignore_errors=True)
                raise ModelSourceError(f"copying model from {model} failed: {type(e).__name__}: {e}") from e
            (staging / _COMPLETE_MARKER).write_text(
                f"{count} files from {model} in {time.monotonic() - start:.1f}s by pid {os.getpid()}\n"
            )
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(staging, dest)
            return dest
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def model_problem(model: str, storage_options: dict | None = None, hub_timeout_s: float = 10.0) -> str | None:
    """Why ``model`` cannot be loaded, in a few words, or None when it looks loadable.

    Checked on the driver before any actor starts, cheaply: a local directory must hold a
    config.json; an object-storage prefix must hold one (one listing, one small read); a hub id
    must be in the local Hugging Face cache or answer on the hub within ``hub_timeout_s``
    seconds (HF_HUB_OFFLINE=1: the cache only). Raises nothing: an unexpected failure of the
    check itself is reported as the problem.
    """
    if is_remote(model):
        try:
            from pipeline.io import storage

            fs, root = storage.fsspec_fs(model.rstrip("/"), storage_options or {})
            if not fs.exists(f"{root}/config.json"):
                return f"no config.json under {model}"
        except Exception as e:
            return f"the prefix cannot be read ({type(e).__name__}: {e})"
        return None
    try:
        resolve_model(model, "/nonexistent-cache", storage_options)
    except ModelSourceError as e:
        return str(e).removeprefix(f"model '{model}' is ").removeprefix("model ")
    if Path(model).expanduser().exists():
        return None
    problem = _hub_problem(model, hub_timeout_s)
    # "models/foo" reads as a hub id, but it may have been meant as a local path.
    return f"no local directory of that name, and as a hub id: {problem}" if problem else None


def _hub_problem(model: str, timeout_s: float) -> str | None:
    try:
        from huggingface_hub import HfApi, constants, try_to_load_from_cache
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # a driver without the engine's packages: leave it to the actors
        return None
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    if constants.HF_HUB_OFFLINE:
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(model, timeout=timeout_s)
    except GatedRepoError:
        return "the hub refuses access (a gated model: log in with `hf auth login` or set HF_TOKEN)"
    except RepositoryNotFoundError:
        return "no such model on the Hugging Face hub (or it is private: set HF_TOKEN)"
    except Exception as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        return f"not in the local Hugging Face cache, and the hub cannot be reached ({reason})"
    return None
