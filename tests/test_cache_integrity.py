"""Integrity of the on-disk store: damage anywhere in an entry, of any size, is found, reported by name,
removed and recomputed; entry folders missing a file are damage (never a permanent miss); and the
cache commands refuse a file given as the cache folder."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from probes import cache_files
from probes.cache import Store
from probes.errors import CacheCorruptionWarning


def _flip_middle(path: Path, count: int = 1) -> None:
    """Change ``count`` bytes in the middle of a file (far from its first and last 64 KiB)."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        data = bytearray(handle.read(count))
        handle.seek(-count, os.SEEK_CUR)
        handle.write(bytes(b ^ 0x40 for b in data))


def _put(store: Store, key: str, array: np.ndarray) -> Path:
    store.put(key, array)
    store.flush()
    return store.entry_path(key)


def _get_damaged(store: Store, key: str) -> list[str]:
    """``store.get(key)`` that must find damage: its warnings' texts (the result was None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get(key) is None
    return [str(w.message) for w in caught if issubclass(w.category, CacheCorruptionWarning)]


def _cache_cli(action: str, folder: Path) -> int:
    from concepts.cli import _cmd_cache

    return _cmd_cache(argparse.Namespace(action=action, dir=str(folder)))


# ------------------------------------------------------------------------------ damage in large entries
@pytest.mark.parametrize("mmap", [False, True], ids=["read", "memory-mapped"])
def test_a_byte_changed_in_the_middle_of_a_large_entry_is_found_on_read(tmp_path, monkeypatch, mmap):
    if mmap:  # the memory-mapped path without writing 16 MiB
        monkeypatch.setattr(cache_files, "MMAP_THRESHOLD_BYTES", 2 ** 20)
    array = np.random.default_rng(0).standard_normal(6 * 2 ** 20 // 4).astype(np.float32)  # 6 MiB
    assert array.nbytes > cache_files.FULL_CHECK_BYTES
    key = Store.make_key("large", mmap)
    entry = _put(Store(tmp_path), key, array)
    got = Store(tmp_path).get(key)
    assert isinstance(got, np.memmap) == mmap
    np.testing.assert_array_equal(got, array)
    del got
    _flip_middle(entry / "array.npy")
    messages = _get_damaged(Store(tmp_path), key)
    assert len(messages) == 1 and str(entry) in messages[0] and "array.npy" in messages[0]
    assert not entry.exists() and key not in Store(tmp_path)
    # Recomputed and stored again: the next read is intact.
    _put(Store(tmp_path), key, array)
    np.testing.assert_array_equal(Store(tmp_path).get(key), array)


def test_each_place_of_a_large_file_is_checked(tmp_path):
    array = np.arange(5 * 2 ** 20 // 8, dtype=np.float64)
    store = Store(tmp_path)
    size = None
    for where in (0.25, 0.5, 0.75):
        key = Store.make_key("place", where)
        entry = _put(store, key, array)
        npy = entry / "array.npy"
        size = npy.stat().st_size
        with open(npy, "r+b") as handle:
            handle.seek(int(size * where))
            handle.write(b"\x00\x01\x02\x03" * 64)  # 256 bytes overwritten
        assert len(_get_damaged(Store(tmp_path), key)) == 1
    assert size is not None and size > cache_files.FULL_CHECK_BYTES


def test_verify_finds_damage_in_the_middle_and_the_cli_exits_1(tmp_path, capsys):
    key = Store.make_key("verify-large")
    entry = _put(Store(tmp_path), key, np.ones(5 * 2 ** 20 // 4, np.float32))
    _flip_middle(entry / "array.npy")
    assert _cache_cli("verify", tmp_path) == 1
    out = capsys.readouterr().out
    assert str(entry) in out and "array.npy" in out and "1 damaged entry removed" in out
    assert not entry.exists() and _cache_cli("verify", tmp_path) == 0


def test_damaged_record_arrays_are_found(tmp_path):
    store = Store(tmp_path)
    key = Store.make_key("record")
    store.put_record(key, {"rows": [1, 2]}, {"big": np.ones(5 * 2 ** 20 // 8)})
    entry = store.entry_path(key)
    _flip_middle(entry / "arrays.npz")
    with pytest.warns(CacheCorruptionWarning, match="arrays.npz"):
        assert Store(tmp_path).get_record(key) is None
    assert not entry.exists()


def test_entries_recorded_without_crc32_are_checked_by_their_sha256(tmp_path):
    """An entry written before CRC-32 was recorded stays readable, and damage in it is still found."""
    array = np.arange(5 * 2 ** 20 // 8, dtype=np.float64)
    keys = [Store.make_key("old", i) for i in range(2)]
    for key in keys:
        entry = _put(Store(tmp_path), key, array)
        record = json.loads((entry / "entry.json").read_text())
        info = record["files"]["array.npy"]
        del info["crc32"]
        info["sha256"] = hashlib.sha256((entry / "array.npy").read_bytes()).hexdigest()    # as written then
        (entry / "entry.json").write_text(json.dumps(record))
    np.testing.assert_array_equal(Store(tmp_path).get(keys[0]), array)
    _flip_middle(Store(tmp_path).entry_path(keys[1]) / "array.npy")
    assert len(_get_damaged(Store(tmp_path), keys[1])) == 1


def test_new_entries_record_their_crc32(tmp_path):
    import zlib

    entry = _put(Store(tmp_path), Store.make_key("sums"), np.arange(10.0))
    info = json.loads((entry / "entry.json").read_text())["files"]["array.npy"]
    data = (entry / "array.npy").read_bytes()
    assert info == {"size": len(data), "crc32": zlib.crc32(data)}


@pytest.mark.parametrize("damage", ["header-shape", "no-checksum", "no-size", "wrong-files", "truncated"])
def test_malformed_entries_are_damage_not_errors(tmp_path, damage):
    key = Store.make_key("malformed", damage)
    entry = _put(Store(tmp_path), key, np.arange(1000, dtype=np.float32))
    npy, meta = entry / "array.npy", entry / "entry.json"
    record = json.loads(meta.read_text())
    if damage == "header-shape":
        data = npy.read_bytes().replace(b"(1000,)", b"(9000,)")
        npy.write_bytes(data)
        record["files"]["array.npy"]["size"] = len(data)
    elif damage == "no-checksum":
        del record["files"]["array.npy"]["crc32"]
    elif damage == "no-size":
        del record["files"]["array.npy"]["size"]
    elif damage == "wrong-files":
        record["files"] = {"record.json": record["files"]["array.npy"]}
    else:
        npy.write_bytes(npy.read_bytes()[:-10])
    meta.write_text(json.dumps(record))
    assert len(_get_damaged(Store(tmp_path), key)) == 1
    assert not entry.exists()


# ------------------------------------------------------------------------- entry folders missing a file
def _two_stripped_entries(root: Path) -> tuple[Store, str, str]:
    store = Store(root)
    ka, kb = Store.make_key("a"), Store.make_key("b")
    _put(store, ka, np.arange(5.0))
    _put(store, kb, np.arange(7.0))
    os.remove(store.entry_path(ka) / "array.npy")
    os.remove(store.entry_path(kb) / "entry.json")
    return store, ka, kb


def test_verify_reports_and_removes_folders_missing_a_file(tmp_path):
    store, ka, kb = _two_stripped_entries(tmp_path)
    problems = dict(Store(tmp_path).verify())
    assert problems == {str(store.entry_path(ka)): "file array.npy is missing",
                        str(store.entry_path(kb)): "file entry.json is missing"}
    assert not store.entry_path(ka).exists() and not store.entry_path(kb).exists()
    assert Store(tmp_path).info()["entries"] == 0 and Store(tmp_path).verify() == []


def test_cli_verify_exits_1_on_folders_missing_a_file(tmp_path, capsys):
    store, ka, kb = _two_stripped_entries(tmp_path)
    assert _cache_cli("verify", tmp_path) == 1
    out = capsys.readouterr().out
    assert "array.npy is missing" in out and "entry.json is missing" in out and "2 damaged entries removed" in out
    assert _cache_cli("verify", tmp_path) == 0


def test_verify_skips_an_entry_removed_meanwhile(tmp_path, monkeypatch):
    store = Store(tmp_path)
    key = Store.make_key("vanishing")
    entry = _put(store, key, np.arange(3.0))
    real = Store._load

    def cleared_meanwhile(self, key, entry, kind, *, full):
        shutil.rmtree(entry)  # a concurrent clear: the whole folder goes
        return real(self, key, entry, kind, full=full)

    monkeypatch.setattr(Store, "_load", cleared_meanwhile)
    assert Store(tmp_path).verify() == [] and not entry.exists()


def test_a_folder_without_its_record_is_damage_on_get_and_is_written_again(tmp_path):
    store, _, kb = _two_stripped_entries(tmp_path)
    entry = store.entry_path(kb)
    messages = _get_damaged(Store(tmp_path), kb)
    assert len(messages) == 1 and str(entry) in messages[0] and "entry.json is missing" in messages[0]
    assert not entry.exists()
    fresh = Store(tmp_path)
    fresh.put(kb, np.arange(7.0))
    fresh.flush()
    assert (entry / "entry.json").is_file()
    np.testing.assert_array_equal(Store(tmp_path).get(kb), np.arange(7.0))


def test_a_put_replaces_a_damaged_folder(tmp_path):
    store, ka, kb = _two_stripped_entries(tmp_path)
    for key, value in ((kb, np.arange(7.0)), (ka, np.arange(5.0))):
        if key == ka:  # a folder missing its array but with its record: found by the read, then written
            _get_damaged(Store(tmp_path), key)
        writer = Store(tmp_path)
        writer.put(key, value)
        writer.flush()
        np.testing.assert_array_equal(Store(tmp_path).get(key), value)
    # A file where an entry's folder belongs is replaced too.
    kc = Store.make_key("c")
    place = store.entry_path(kc)
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(b"junk")
    assert cache_files.write_entry(place, kc, "record", {"arrays": []}, None,
                                   {"record.json": lambda h: h.write(b"[1]")}) == 3
    assert Store(tmp_path).get_record(kc)[0] == [1]


def test_a_writer_in_progress_is_left_alone(tmp_path):
    store = Store(tmp_path)
    key = Store.make_key("in-progress")
    entry = store.entry_path(key)
    tmp = entry.parent / f".tmp-{key}-1-abc"  # how write_entry lays out a write in progress
    tmp.mkdir(parents=True)
    (tmp / "array.npy").write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get(key) is None
        assert store.verify() == []
    assert (tmp / "array.npy").is_file()


# ----------------------------------------------------------------------------- a file as the cache folder
@pytest.mark.parametrize("action", ["info", "verify", "clear"])
def test_cache_commands_refuse_a_file_as_the_folder(tmp_path, capsys, action):
    path = tmp_path / "not-a-folder"
    path.write_text("keep me")
    assert _cache_cli(action, path) != 0
    err = capsys.readouterr().err
    assert "is a file, not a cache folder" in err and str(path) in err and "--dir" in err
    assert path.read_text() == "keep me"


def test_store_maintenance_refuses_a_file_as_the_folder(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    for call in (Store(path).info, Store(path).verify, Store(path).clear):
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            call()
    assert path.read_text() == "x"


# ------------------------------------------------------------------------------- end to end: concepts.score
@pytest.mark.slow  # two concepts.score calls, about 10 s on 2 cores
def test_score_after_damage_in_large_activations_equals_the_first_table(tmp_path):
    import keras
    import pandas as pd

    import concepts
    from synthetic import make_data

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    features = keras.layers.Conv2D(160, 3, activation="relu", name="conv1")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled))
    data = make_data(tmp_path / "d", n_class=36, n_concept=10, n_pool=20)
    store = tmp_path / "store"

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = concepts.score(model, "conv1", data / "concepts" / "horizontal", data=data, cache_dir=store,
                                    n_random=3, n_directions=50, progress=False)
        damaged = [str(w.message) for w in caught if issubclass(w.category, CacheCorruptionWarning)]
        return result.to_frame(), damaged

    before, damaged = run()
    assert damaged == []
    Store(store).flush()
    flipped = []
    for entry in list(Store(store).entries()):
        kind = json.loads((entry / "entry.json").read_text()).get("meta", {}).get("kind")
        if kind not in ("act", "grad"):
            shutil.rmtree(entry)  # whole results and vectors: so that the activations are read again
        elif (entry / "array.npy").stat().st_size > cache_files.FULL_CHECK_BYTES:
            _flip_middle(entry / "array.npy", 256)
            flipped.append(entry)
    assert flipped, "no activation entry larger than FULL_CHECK_BYTES"
    after, damaged = run()
    assert len(damaged) == len(flipped)
    assert all(any(str(entry) in message for message in damaged) for entry in flipped)
    pd.testing.assert_frame_equal(after, before)


def _count_checksummed(monkeypatch) -> list[int]:
    seen = [0]
    update = cache_files._Checksums.update

    def counting(self, data):
        seen[0] += memoryview(data).nbytes
        update(self, data)

    monkeypatch.setattr(cache_files._Checksums, "update", counting)
    return seen


def test_an_entry_checked_whole_is_not_checked_again_until_its_files_change(tmp_path, monkeypatch):
    # Files older than RACY_SECONDS when checked (here: any age) are trusted while unchanged.
    monkeypatch.setattr(cache_files, "RACY_SECONDS", -1.0)
    monkeypatch.setattr(cache_files, "_CHECKED", cache_files._CheckedEntries())
    store = Store(tmp_path / "c")
    key = Store.make_key("trusted")
    entry = _put(store, key, np.arange(2 ** 21, dtype=np.float32))     # 8 MiB: above the in-process copies
    seen = _count_checksummed(monkeypatch)
    fresh = Store(tmp_path / "c")       # no in-process copy: every get reads the files
    np.testing.assert_array_equal(fresh.get(key), np.arange(2 ** 21, dtype=np.float32))
    assert seen[0] >= 8 * 2 ** 20
    seen[0] = 0
    np.testing.assert_array_equal(Store(tmp_path / "c").get(key), np.arange(2 ** 21, dtype=np.float32))
    assert seen[0] == 0
    time.sleep(0.1)      # past the timestamp tick of the write (RACY_SECONDS, patched away here, ensures it)
    _flip_middle(entry / "array.npy")     # a write: new times, so checked again, and the damage found
    assert _get_damaged(Store(tmp_path / "c"), key)


def test_files_changed_within_racy_seconds_of_the_check_are_checked_on_every_read(tmp_path, monkeypatch):
    # Just written: a rewrite in place inside one timestamp tick would keep the same identity.
    monkeypatch.setattr(cache_files, "_CHECKED", cache_files._CheckedEntries())
    store = Store(tmp_path / "c")
    key = Store.make_key("racy")
    _put(store, key, np.arange(2 ** 21, dtype=np.float32))
    seen = _count_checksummed(monkeypatch)
    for _ in range(2):
        seen[0] = 0
        assert Store(tmp_path / "c").get(key) is not None and seen[0] >= 8 * 2 ** 20
