"""Model sources: hub id, local dir, and an s3:// prefix copied once per node (real S3 on loopback)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from actors.model_source import ModelSourceError, resolve_model


def _sync(args):
    model, cache, options = args
    return resolve_model(model, cache, options)


@pytest.fixture()
def model_prefix(s3, tmp_path):
    fs = s3.fs()
    if not fs.exists("msrc"):
        fs.mkdir("msrc")
    prefix = f"msrc/{tmp_path.name}/tiny"
    fs.pipe_file(f"{prefix}/config.json", b'{"model_type": "qwen3_asr"}')
    fs.pipe_file(f"{prefix}/model.safetensors", b"\0" * 300_000)
    fs.pipe_file(f"{prefix}/sub/extra.txt", b"x")
    return f"s3://{prefix}"


def test_concurrent_actors_copy_once_and_never_see_partial(s3, model_prefix, tmp_path):
    cache = str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_sync, [(model_prefix, cache, s3.storage_options)] * 4)
    assert len(set(paths)) == 1
    local = Path(paths[0])
    assert (local / "config.json").read_bytes() == b'{"model_type": "qwen3_asr"}'
    assert (local / "model.safetensors").stat().st_size == 300_000
    assert (local / "sub" / "extra.txt").read_bytes() == b"x"
    marker = (local / ".complete").read_text()
    assert marker.startswith("3 files from " + model_prefix)
    # One copy, published by rename: no staging directories left behind.
    assert sorted(p.name for p in Path(cache).iterdir() if p.is_dir()) == [local.name]
    # Cached: a second resolve does not need the bucket any more.
    s3.fs().rm(model_prefix.removeprefix("s3://"), recursive=True)
    assert resolve_model(model_prefix, cache, s3.storage_options) == str(local)


def test_missing_prefix_is_a_clear_error(s3, tmp_path):
    with pytest.raises(ModelSourceError, match="holds no files|failed"):
        resolve_model("s3://msrc/nothing-here", str(tmp_path), s3.storage_options)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_local_dir_and_hub_id(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(str(tmp_path / "m"), str(tmp_path))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m"), str(tmp_path)) == str((tmp_path / "m").resolve())
    assert resolve_model("Qwen/Qwen3-ASR-0.6B", str(tmp_path)) == "Qwen/Qwen3-ASR-0.6B"
    with pytest.raises(ModelSourceError, match="neither"):
        resolve_model("/no/such/dir", str(tmp_path))
