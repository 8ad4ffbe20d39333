"""Tests of probes.cache: round trips, misses, damaged entries and concurrent writers."""
from __future__ import annotations

import json
import multiprocessing as mp
import warnings
from pathlib import Path

import numpy as np
import pytest

from probes import cache as cache_mod
from probes import cache_files
from probes.cache import ActivationCache, CacheCorruptionWarning, default_cache_dir
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
    record = json.loads(meta.read_text(encoding="utf-8"))
    assert record["meta"] == {"layer": "conv1"} and record["shape"] == [7, 3, 2]
    assert record["format"] == cache_mod.FORMAT_VERSION and isinstance(record["files"]["array.npy"]["crc32"], int)
    got = cache.get(key)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.float32 and not got.flags.writeable
    # A second cache object on the same directory (another process) sees the entry.
    np.testing.assert_array_equal(ActivationCache(tmp_path).get(key), array)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_large_arrays_are_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_files, "MMAP_THRESHOLD_BYTES", 1024)  # read where entries are loaded
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("big")
    array = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    cache.put(key, array)
    cache.flush()   # a pending entry is served from memory; a read of the finished entry maps the file
    got = cache.get(key)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, array)


def test_miss_and_version_mismatch(tmp_path):
    cache = ActivationCache(tmp_path)
    assert cache.get(ActivationCache.make_key("absent")) is None
    key = ActivationCache.make_key("x")
    cache.put(key, np.ones(3))
    _, meta = _files(cache, key)
    record = json.loads(meta.read_text(encoding="utf-8"))
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
    record = json.loads(meta.read_text(encoding="utf-8"))
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
    cache.flush()
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


# ------------------------------------------------------------------------------------------ the store
def test_records_round_trip_on_disk_and_in_memory(tmp_path):
    for store in (ActivationCache(tmp_path), ActivationCache()):
        key = ActivationCache.make_key("record", str(store.directory))
        arrays = {"a": np.arange(5, dtype=np.int16), "b/c": np.array(["x", "yz"]), "nan": np.array([np.nan, 1.0])}
        store.put_record(key, {"rows": [1, 2.5, None, "t"], "nan": float("nan")}, arrays, meta={"kind": "outcome"})
        data, got = store.get_record(key)
        assert data["rows"] == [1, 2.5, None, "t"] and np.isnan(data["nan"])
        assert sorted(got) == sorted(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(got[name], value)
            assert got[name].dtype == value.dtype
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheCorruptionWarning)
            assert store.get(key) is None  # a record is not an array entry: a miss, not damage
        assert store.get_record(key) is not None


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        ActivationCache(tmp_path).put_record(ActivationCache.make_key("o"), {}, {"x": np.array([{}], dtype=object)})


def test_key_carries_the_package_version(monkeypatch):
    before = ActivationCache.make_key("same")
    monkeypatch.setattr(cache_mod, "package_version", lambda: "99.0")
    assert ActivationCache.make_key("same") != before


def _different_writer(directory: str, key: str, value: float, barrier) -> None:
    cache = ActivationCache(directory)
    barrier.wait()
    for _ in range(20):
        cache.put(key, np.full((200, 300), value, np.float32), {"writer": value})


def test_two_processes_writing_different_bytes_never_mix(tmp_path):
    # Before the store wrote whole entries, one writer's array could be paired with the other's record.
    key = ActivationCache.make_key("different-bytes")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_different_writer, args=(str(tmp_path), key, float(v), barrier)) for v in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        got = ActivationCache(tmp_path).get(key)
    record = json.loads((ActivationCache(tmp_path).entry_path(key) / "entry.json").read_text(encoding="utf-8"))
    assert np.all(got == record["meta"]["writer"])  # the array and its record come from one writer
    assert not list(tmp_path.rglob(".tmp-*"))


def test_threads_writing_different_bytes_never_mix(tmp_path):
    import threading

    key = ActivationCache.make_key("threads")
    errors = []

    def write(value: float) -> None:
        try:
            cache = ActivationCache(tmp_path)
            for _ in range(30):
                cache.put(key, np.full(1000, value), {"writer": value})
                got = cache.get(key)
                meta = json.loads((cache.entry_path(key) / "entry.json").read_text(encoding="utf-8"))["meta"]
                assert got is not None and np.all(got == meta["writer"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        threads = [threading.Thread(target=write, args=(float(v),)) for v in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_size_cap_evicts_least_recently_used(tmp_path):
    cache = ActivationCache(tmp_path, max_bytes="30KB")
    keys = [ActivationCache.make_key("lru", str(i)) for i in range(6)]
    import os
    import time
    for i, key in enumerate(keys[:3]):
        cache.put(key, np.zeros(1000))  # ~8 KB each
        os.utime(cache.entry_path(key), ns=(time.time_ns() - (10 - i) * 10 ** 9,) * 2)
    assert cache.get(keys[0]) is not None  # now the most recently used of the three
    cache.put(keys[3], np.zeros(1000))
    present = [key in cache for key in keys[:4]]
    assert present == [True, False, True, True]  # the least recently used one went
    assert cache.info()["bytes"] <= 27_000


def test_cache_max_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCEPTS_CACHE_MAX", "2GB")
    assert ActivationCache(tmp_path).max_bytes == 2 * 10 ** 9
    monkeypatch.setenv("CONCEPTS_CACHE_MAX", "2 gigs")
    with pytest.raises(ValueError, match="CONCEPTS_CACHE_MAX='2 gigs'.*2GB"):
        ActivationCache(tmp_path)
    assert cache_mod.parse_size("1.5GiB") == int(1.5 * 2 ** 30) and cache_mod.parse_size("none") is None


def test_damage_in_the_middle_of_an_entry_is_found_by_a_read_and_by_verify(tmp_path):
    # Every read checks every byte (CRC-32 while reading); reads once sampled the head and tail only.
    cache = ActivationCache(tmp_path)
    for name, find in (("read", lambda c, k: c.get(k)), ("verify", lambda c, k: c.verify())):
        key = ActivationCache.make_key(f"big-middle-{name}")
        cache.put(key, np.arange(100_000, dtype=np.float32))
        npy = cache.entry_path(key) / "array.npy"
        data = bytearray(npy.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npy.write_bytes(bytes(data))
        if name == "read":
            with pytest.warns(CacheCorruptionWarning, match="hash"):
                assert find(cache, key) is None
        else:
            problems = find(cache, key)
            assert len(problems) == 1 and key in problems[0][0] and "hash" in problems[0][1]
        assert key not in cache and cache.verify() == []


def test_created_folders_are_private(tmp_path):
    cache = ActivationCache(tmp_path / "new" / "store")
    cache.put(ActivationCache.make_key("p"), np.ones(2))
    for folder in (tmp_path / "new", tmp_path / "new" / "store"):
        assert folder.stat().st_mode & 0o777 == 0o700


def test_clear_removes_legacy_files_and_keeps_others(tmp_path):
    cache = ActivationCache(tmp_path)
    cache.put(ActivationCache.make_key("new"), np.ones(2))
    legacy = tmp_path / "ab" / ("ab" + "0" * 62 + ".npy")
    legacy.parent.mkdir(exist_ok=True)
    legacy.write_bytes(b"old")
    (tmp_path / "ab" / "notes.txt").write_text("keep")
    cache.clear()
    assert not legacy.exists() and (tmp_path / "ab" / "notes.txt").exists()
    assert list(cache.entries()) == []


# ------------------------------------------------------------------------------------------ identity
def test_file_identity_sees_a_same_size_rewrite_with_the_same_mtime(tmp_path, monkeypatch):
    import os

    from probes import identity

    monkeypatch.setattr(identity, "RACY_SECONDS", 0.0)  # allow memoising a file written just now
    path = tmp_path / "a.bin"
    path.write_bytes(b"AAAA")
    stat = path.stat()
    first = identity.file_sha256(path)
    path.write_bytes(b"BBBB")  # same size, same inode
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert identity.file_sha256(path) != first  # ctime moved: re-hashed
    assert identity.file_sha256(path) == identity.sha256_file(path)


def test_fresh_files_are_not_memoised(tmp_path):
    from probes import identity

    path = tmp_path / "fresh.bin"
    path.write_bytes(b"x")
    identity.file_sha256(path)
    assert not [k for k in identity._MEMO if k[0] == str(path)]


def test_model_identity_follows_weights_and_custom_layer_code():
    import keras

    from probes.identity import _code_digest, _custom_classes, model_identity

    class Double(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    class Triple(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    def build(layer_class):
        inputs = keras.Input((3,), name="x")
        out = keras.layers.Dense(2, kernel_initializer="ones", name="head")(layer_class(name="scale")(inputs))
        return keras.Model(inputs, out, name="m")

    a, b = build(Double), build(Double)
    assert model_identity(a) == model_identity(b)
    assert Double in _custom_classes(a) and not any(c.__module__.startswith("keras") for c in _custom_classes(a))
    assert _code_digest(Double) != _code_digest(Triple)
    dense = a.get_layer("head")
    dense.set_weights([w + 1 for w in dense.get_weights()])
    assert model_identity(a) != model_identity(b)


def test_model_without_config_is_not_cached(tmp_path):
    import keras

    import concepts
    from synthetic import make_data

    class NoConfig(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def call(self, x):
            return x

        def get_config(self):
            raise NotImplementedError("no config")

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv1")(NoConfig()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    data = make_data(tmp_path / "d", n_class=6, n_concept=8, n_pool=40)
    store = tmp_path / "store"
    with pytest.warns(UserWarning, match="cannot be identified"):
        concepts.score(model, "conv1", data / "concepts" / "horizontal", cache_dir=store, n_random=3,
                       n_directions=50, progress=False)
    assert not list(ActivationCache(store).entries())


# ------------------------------------------------------------------------------------------ outcomes
def test_outcome_encoding_is_exact():
    import pandas as pd

    from concepts.outcome_store import decode_outcome, encode_outcome

    table = pd.DataFrame({"class": ["a", "b"], "score": [0.1 + 0.2, np.nan], "significant": [True, False],
                          "n": np.array([3, 4], np.int64), "seed": [0, 0]})
    scatter = pd.DataFrame({"measure": [1.0, 2.0], "image": ["x.png", "y.png"]})
    scatter.attrs["r2_cv"] = np.float64(0.25)
    runs = {("a", "conv1", "c"): {"scores": np.array([0.5, 0.75]), "null_ubs": np.array([0.1])}}
    provenance = {"seed": 0, "layers": {"conv1": {"shape": (4, 4, 2)}}, "alpha": np.float32(0.5)}
    fields = decode_outcome(*encode_outcome(table, runs, {("conv1", "m"): scatter}, provenance))
    pd.testing.assert_frame_equal(fields["table"], table)
    pd.testing.assert_frame_equal(fields["scatter"][("conv1", "m")], scatter)
    assert fields["scatter"][("conv1", "m")].attrs == {"r2_cv": 0.25}
    np.testing.assert_array_equal(fields["runs"][("a", "conv1", "c")]["scores"], [0.5, 0.75])
    assert fields["provenance"] == {"seed": 0, "layers": {"conv1": {"shape": [4, 4, 2]}}, "alpha": 0.5}
    with pytest.raises(TypeError, match="object"):
        encode_outcome(table, {}, {}, {"x": object()})


def test_sweep_removes_only_stale_temporary_folders(tmp_path):
    import os
    import time

    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("kept")
    cache.put(key, np.ones(2))
    sub = cache.entry_path(key).parent
    stale, fresh = sub / ".tmp-stale", sub / ".tmp-fresh"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200,) * 2)
    assert cache.sweep() == 1
    assert not stale.exists() and fresh.exists() and key in cache


def test_collections_of_names_are_accepted():
    import pandas as pd

    from concepts.validation import OptionError, validate_options

    validate_options({"columns": pd.Index(["a", "b"]), "classes": np.array([0, 1]), "layers": ("c1", "c2")})
    with pytest.raises(OptionError, match="columns=.*a list of names"):
        validate_options({"columns": [1, 2]})
    with pytest.raises(OptionError, match="Unknown option 'n_randoms'.*'n_random'"):
        validate_options({"n_randoms": 3})


def test_an_unwritable_store_warns_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    cache = ActivationCache(blocker / "store")
    with pytest.warns(UserWarning, match="Cannot write to the cache") as caught:
        for i in range(3):
            cache.put(ActivationCache.make_key("w", str(i)), np.ones(2))
    assert len([w for w in caught if "Cannot write" in str(w.message)]) == 1
    assert cache.get(ActivationCache.make_key("w", "0")) is None


def test_background_writes_keep_the_value_at_put_time_and_flush(tmp_path):
    from probes.cache import flush_writes

    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("bg")
    array = np.arange(50_000, dtype=np.float32)
    cache.put(key, array)
    array[:] = -1  # the caller may reuse its buffer at once: the entry keeps the values it was given
    flush_writes()
    assert list(tmp_path.rglob("array.npy"))  # on disk after a flush, seen by a plain folder walk
    assert np.array_equal(ActivationCache(tmp_path).get(key), np.arange(50_000, dtype=np.float32))


def test_a_pending_key_reads_back_through_the_disk(tmp_path):
    cache = ActivationCache(tmp_path)
    keys = [ActivationCache.make_key("pending", str(i)) for i in range(20)]
    for i, key in enumerate(keys):
        cache.put(key, np.full(10_000, i, np.float64))
    # Any store on the folder sees every entry put, whether or not the writer has finished.
    other = ActivationCache(tmp_path)
    assert all(key in cache for key in keys)
    assert [float(other.get(key)[0]) for key in keys] == list(range(20))


def test_a_pending_array_is_served_without_waiting_for_the_writer(tmp_path):
    import threading

    from probes.cache import flush_writes
    from probes.cache_writer import _WRITER

    gate = threading.Event()
    # The writer is busy (an unrelated, slow entry) until the gate opens; a get that waited for it
    # would take the whole 30 s and find the key written.
    _WRITER.submit(ActivationCache(tmp_path / "other"), "0" * 64, ({}, {}), lambda: gate.wait(30))
    try:
        cache = ActivationCache(tmp_path / "store")
        key = ActivationCache.make_key("served")
        array = np.arange(6, dtype=np.float32)
        cache.put(key, array)
        array[:] = -1                      # the store keeps the values it was given
        got = cache.get(key)
        assert _WRITER.pending(cache, key) is not None     # not written yet: served from memory
        assert got.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and not got.flags.writeable
    finally:
        gate.set()
        flush_writes()
    assert ActivationCache(tmp_path / "store").get(key).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_synchronous_writes_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    cache = ActivationCache(tmp_path)
    key = ActivationCache.make_key("sync")
    cache.put(key, np.ones(3))
    assert (tmp_path / key[:2] / key / "entry.json").is_file()  # no flush needed


def test_entries_are_fsynced_unless_the_store_is_throwaway(tmp_path, monkeypatch):
    # Durability is the default: every file of an entry and its folder are synced before the rename.
    synced = []
    monkeypatch.setattr(cache_files.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    cache = ActivationCache(tmp_path)
    cache.put(ActivationCache.make_key("durable"), np.ones(3))
    assert len(synced) >= 3  # the array, entry.json and the parent folder
    # A throwaway store (the doctests' cache) skips it and still writes a whole entry.
    synced.clear()
    monkeypatch.setattr(cache_files, "FSYNC", False)
    key = ActivationCache.make_key("throwaway")
    cache.put(key, np.ones(3))
    assert synced == []
    assert cache.get(key).tolist() == [1.0, 1.0, 1.0]


def test_held_writes_wait_for_the_block_and_are_served_meanwhile(tmp_path):
    import threading
    import time

    from probes.cache import Store
    from probes.cache_writer import _WRITER, hold_writes

    store = Store(tmp_path / "held")
    key = Store.make_key("held")
    array = np.arange(1000, dtype=np.float32)
    with hold_writes():
        store.put(key, array)
        time.sleep(0.2)
        assert _WRITER.pending(store, key) is not None                     # not written while held
        np.testing.assert_array_equal(store.get(key), array)               # but served
    store.flush()
    assert _WRITER.pending(store, key) is None
    np.testing.assert_array_equal(Store(tmp_path / "held").get(key), array)

    # A flush inside the block writes at once; so does a put that would pass the pending limit.
    other = Store.make_key("flushed")
    with hold_writes():
        store.put(other, array)
        done = threading.Event()
        threading.Thread(target=lambda: (store.flush(), done.set())).start()
        assert done.wait(10)
        assert _WRITER.pending(store, other) is None


def test_a_put_past_the_pending_limit_is_written_even_while_held(tmp_path, monkeypatch):
    import probes.cache_writer as cw
    from probes.cache import Store

    monkeypatch.setattr(cw, "PENDING_BYTES_LIMIT", 6000)
    store = Store(tmp_path / "limit")
    keys = [Store.make_key("limit", i) for i in range(4)]
    with cw.hold_writes():
        for key in keys:      # 4000 bytes each: every put after the first waits for room, not forever
            store.put(key, np.zeros(1000, np.float32))
    store.flush()
    assert all(cw._WRITER.pending(store, key) is None for key in keys)


@pytest.mark.parametrize("sync", [False, True])
def test_a_handed_over_array_is_kept_without_a_copy_and_others_are_copied(tmp_path, monkeypatch, sync):
    """A small entry the caller made read-only and owns is the in-memory copy; a writeable one is copied."""
    if sync:
        monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    cache = ActivationCache(tmp_path)
    handed, edited = ActivationCache.make_key("handed"), ActivationCache.make_key("edited")
    owned = np.arange(5, dtype=np.float32)
    owned.flags.writeable = False
    cache.put(handed, owned)
    assert np.shares_memory(cache.get(handed), owned)
    caller = np.arange(5, dtype=np.float32)
    cache.put(edited, caller)
    caller[0] = 100.0      # the caller's later edit must not leak into the cache
    assert cache.get(edited).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    view = np.arange(10, dtype=np.float32)[::2]     # read-only but a view of a writeable array: copied
    view.flags.writeable = False
    cache.put(ActivationCache.make_key("view"), view)
    assert not np.shares_memory(cache.get(ActivationCache.make_key("view")), view)
    from probes.cache_writer import flush_writes
    flush_writes()
    assert ActivationCache(tmp_path).get(handed).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
