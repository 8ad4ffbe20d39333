"""Tests of probes.cache: round trips, misses, damaged entries and concurrent writers."""
from __future__ import annotations

import json
import multiprocessing as mp
import warnings
from pathlib import Path

import numpy as np
import pytest

from probes import cache as cache_mod
from probes.cache import ActivationCache, default_cache_dir
from probes.errors import CacheCorruptionWarning


def _files(cache: ActivationCache, key: str) -> tuple[Path, Path]:
    entry = cache.entry_path(key)
    return entry / "array.npy", entry / "entry.json"


def test_make_key_is_deterministic_and_unambiguous():
    k = ActivationCache.make_key("a", "bc")
    assert k == ActivationCache.make_key("a", "bc")
    assert k != ActivationCache.make_key("ab", "c")
    assert k != ActivationCache.make_key("a", "b", "c")
    assert k != ActivationCache.make_key("a\x00bc")
    assert len(k) == 64 and int(k, 16) >= 0


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONCEPTS_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "concepts-toolkit"


def test_round_trip_on_disk(tmp_path):
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("model", "layer", "act")
    array = np.random.default_rng(0).normal(size=(7, 3, 2)).astype(np.float32)
    assert cache.get(key) is None and key not in cache
    cache.put(key, array, {"layer": "conv1"})
    assert key in cache
    npy, meta = _files(cache, key)
    assert npy.parent.name == key and npy.parent.parent.name == key[:2] and npy.is_file() and meta.is_file()
    record = json.loads(meta.read_text())
    assert record["meta"] == {"layer": "conv1"} and record["shape"] == [7, 3, 2]
    assert record["format"] == cache_mod.FORMAT_VERSION and len(record["files"]["array.npy"]["sha256"]) == 64
    got = cache.get(key)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.float32 and not got.flags.writeable
    # A second cache object on the same directory (another process) sees the entry.
    np.testing.assert_array_equal(ActivationCache(tmp_path).get(key), array)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_large_arrays_are_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "MMAP_THRESHOLD_BYTES", 1024)
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("big")
    array = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    cache.put(key, array)
    got = cache.get(key)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, array)


def test_miss_and_version_mismatch(tmp_path):
    cache = ActivationCache(tmp_path)
    assert cache.get(ActivationCache.make_key("absent")) is None
    key = ActivationCache.make_key("x")
    cache.put(key, np.ones(3))
    _, meta = _files(cache, key)
    record = json.loads(meta.read_text())
    record["format"] = 999
    meta.write_text(json.dumps(record))
    with pytest.warns(CacheCorruptionWarning, match="foreign entry"):
        assert cache.get(key) is None
    assert not npy_exists(cache, key)


def npy_exists(cache: ActivationCache, key: str) -> bool:
    return cache.entry_path(key).exists()


def test_invalid_key_rejected(tmp_path):
    with pytest.raises(ValueError):
        ActivationCache(tmp_path).put("../../etc/passwd", np.ones(2))


def _damage_and_get(cache: ActivationCache, key: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = cache.get(key)
    return got, [w for w in caught if issubclass(w.category, CacheCorruptionWarning)]


def test_flipped_bytes_warn_and_remove(tmp_path):
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("flip")
    cache.put(key, np.arange(100, dtype=np.float32))
    npy, meta = _files(cache, key)
    data = bytearray(npy.read_bytes())
    data[-10] ^= 0xFF
    npy.write_bytes(bytes(data))
    got, caught = _damage_and_get(cache, key)
    assert got is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(npy.parent) in message and "recomputed" in message
    assert not npy.exists() and not meta.exists()
    # After removal it is a plain miss, and a new put works.
    assert cache.get(key) is None
    cache.put(key, np.zeros(2))
    np.testing.assert_array_equal(cache.get(key), np.zeros(2))


def test_truncated_file_warns(tmp_path):
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("trunc")
    cache.put(key, np.arange(100, dtype=np.float64))
    npy, meta = _files(cache, key)
    npy.write_bytes(npy.read_bytes()[:50])
    got, caught = _damage_and_get(cache, key)
    assert got is None and len(caught) == 1
    assert not npy.exists() and not meta.exists()


def test_unreadable_npy_with_matching_record_warns(tmp_path):
    # A record whose hash matches garbage bytes (e.g. written by a buggy tool) is still refused.
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("garbage-npy")
    cache.put(key, np.ones(4))
    npy, meta = _files(cache, key)
    garbage = b"not an npy file at all"
    npy.write_bytes(garbage)
    record = json.loads(meta.read_text())
    import hashlib
    record["files"]["array.npy"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    meta.write_text(json.dumps(record))
    got, caught = _damage_and_get(cache, key)
    assert got is None and len(caught) == 1
    assert not npy.exists()


def test_json_garbage_and_missing_npy_are_reported_and_repaired(tmp_path):
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("json")
    cache.put(key, np.ones(3))
    npy, meta = _files(cache, key)
    meta.write_text("{not json")
    with pytest.warns(CacheCorruptionWarning, match="unreadable record"):
        assert cache.get(key) is None
    cache.put(key, np.ones(3))  # the damaged entry was removed, so the key can be written again
    np.testing.assert_array_equal(cache.get(key), np.ones(3))
    npy.unlink()
    with pytest.warns(CacheCorruptionWarning, match="missing"):
        assert cache.get(key) is None
    assert key not in cache


def test_clear(tmp_path):
    cache = ActivationCache(tmp_path)
    keys = [ActivationCache.make_key(str(i)) for i in range(5)]
    for k in keys:
        cache.put(k, np.ones(2))
    (tmp_path / "unrelated.txt").write_text("keep me")
    cache.clear()
    assert all(cache.get(k) is None for k in keys)
    assert (tmp_path / "unrelated.txt").exists()


def test_in_memory_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = ActivationCache()
    key = ActivationCache.make_key("mem")
    array = np.arange(4.0)
    cache.put(key, array, {"a": 1})
    array[0] = 100.0  # the caller's later edit must not leak into the cache
    got = cache.get(key)
    np.testing.assert_array_equal(got, [0.0, 1.0, 2.0, 3.0])
    assert not got.flags.writeable
    assert key in cache
    cache.clear()
    assert cache.get(key) is None and key not in cache
    assert not list(tmp_path.iterdir())  # nothing written to disk


def _writer(directory: str, key: str, repeats: int, barrier) -> None:
    cache = ActivationCache(directory)
    array = np.arange(200_000, dtype=np.float32).reshape(400, 500)
    barrier.wait()
    for _ in range(repeats):
        cache.put(key, array, {"writer": "same content"})
        got = cache.get(key)
        # Readers racing with writers may miss, but must never see wrong data.
        if got is not None:
            assert np.array_equal(got, array)


def test_concurrent_writers_leave_valid_entry(tmp_path):
    key = ActivationCache.make_key("concurrent")
    ctx = mp.get_context("spawn")  # fork is unsafe once other tests have started TF threads
    n = 3
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, 15, barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        got = ActivationCache(tmp_path).get(key)
    np.testing.assert_array_equal(got, np.arange(200_000, dtype=np.float32).reshape(400, 500))
    assert not list(tmp_path.rglob(".tmp-*"))
