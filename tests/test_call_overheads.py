"""What repeated ``concepts.score`` calls in one process may skip, and what they must still notice.

Each test has a known answer: an entry kept in memory is served without the loader, and stops
being served as soon as the entry is removed or its files change; a changed folder is listed again.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from probes import cache as cache_mod
from probes import cache_recent
from probes.cache import Store
from probes.errors import CacheCorruptionWarning


@pytest.fixture(params=["background", "sync"])
def write_mode(request, monkeypatch):
    if request.param == "sync":
        monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    return request.param


def test_a_zero_dimensional_array_round_trips(tmp_path, write_mode):
    store = Store(tmp_path)
    key = Store.make_key("scalar")
    store.put(key, np.float64(2.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        got = Store(tmp_path).get(key)  # from disk, as another process reads it
    assert got.shape == () and got.dtype == np.float64 and float(got) == 2.5


# ------------------------------------------------------------------ small array entries kept in memory
@pytest.fixture
def loads(monkeypatch):
    """Count the store's reads from disk (every one goes through probes.cache.load_entry)."""
    seen: list[str] = []
    real = cache_mod.load_entry

    def counting(key, entry, kind, *, full):
        seen.append(key)
        return real(key, entry, kind, full=full)

    monkeypatch.setattr(cache_mod, "load_entry", counting)
    cache_mod._RECENT.forget()
    yield seen
    cache_mod._RECENT.forget()


def _from_disk(store: Store, key: str) -> np.ndarray:
    store.flush()          # a get of a key still pending is served the array being written
    cache_mod._RECENT.forget(key)
    return Store(store.directory).get(key)


@pytest.mark.parametrize("make", [
    lambda: np.arange(12, dtype=np.float32),
    lambda: np.arange(12, dtype=">i2").reshape(3, 4),            # big-endian stays big-endian
    lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),     # read back in C order
    lambda: np.arange(24, dtype=np.int64)[::2],                   # not contiguous
    lambda: np.array([True, False]),
    lambda: np.array([1 + 2j], dtype=np.complex64),
    lambda: np.float64(2.5),
])
def test_a_get_after_a_put_is_served_from_memory_as_the_disk_would_serve_it(tmp_path, write_mode, loads, make):
    store = Store(tmp_path)
    key = Store.make_key("kept", write_mode)
    given = make()
    store.put(key, given)
    first = Store(tmp_path).get(key)   # another store on the folder: the next score call
    again = store.get(key)
    assert loads == [] and first is again
    disk = _from_disk(store, key)
    assert loads == [key]
    for got in (first, disk):
        assert not got.flags.writeable and got.flags.c_contiguous
    with pytest.raises(ValueError):
        first.flags.writeable = True   # shared by every get: no caller may change it
    assert first.dtype.str == disk.dtype.str and first.shape == disk.shape == np.shape(given)
    assert first.tobytes() == disk.tobytes() and np.array_equal(first, given)


def test_the_kept_copy_does_not_follow_the_callers_array(tmp_path, write_mode, loads):
    store = Store(tmp_path)
    writeable = np.arange(5.0)
    base = np.arange(5.0)
    view = base.view()
    view.flags.writeable = False  # read-only, but its owner may still change the bytes
    keys = [Store.make_key("own", write_mode, str(i)) for i in range(2)]
    store.put(keys[0], writeable)
    store.put(keys[1], view)
    writeable[:] = -1
    base[:] = -1
    assert [store.get(k).tolist() for k in keys] == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 2
    assert loads == []
    assert [_from_disk(store, k).tolist() for k in keys] == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 2


def test_a_read_from_disk_is_kept_too(tmp_path, loads):
    store = Store(tmp_path)
    key = Store.make_key("read")
    store.put(key, np.ones(3))
    store.flush()
    cache_mod._RECENT.forget()
    first = store.get(key)
    assert first is store.get(key) and loads == [key]
    with pytest.raises(ValueError):
        first.flags.writeable = True


def test_clear_forgets_the_kept_copies(tmp_path, write_mode, loads):
    store = Store(tmp_path)
    key = Store.make_key("clear", write_mode)
    store.put(key, np.ones(3))
    store.flush()
    assert store.get(key) is not None and len(cache_mod._RECENT) == 1
    Store(tmp_path).clear()
    assert len(cache_mod._RECENT) == 0
    assert store.get(key) is None and key not in store


def test_an_entry_removed_behind_the_stores_back_is_a_miss(tmp_path, write_mode, loads):
    import shutil

    store = Store(tmp_path)
    key = Store.make_key("gone", write_mode)
    store.put(key, np.ones(3))
    assert store.get(key) is not None
    store.flush()
    shutil.rmtree(tmp_path / key[:2] / key)   # another process's clear, a user's rm
    assert store.get(key) is None and len(cache_mod._RECENT) == 0


def test_a_replaced_entry_is_read_again(tmp_path, loads):
    import shutil

    store = Store(tmp_path)
    key = Store.make_key("replaced")
    store.put(key, np.ones(3))
    store.flush()
    folder = tmp_path / key[:2] / key
    shutil.copytree(folder, tmp_path / "copy")
    shutil.rmtree(folder)
    (tmp_path / "copy").rename(folder)       # the same files, new inodes
    assert store.get(key).tolist() == [1.0, 1.0, 1.0] and loads == [key]


@pytest.mark.parametrize("how", ["entry_path", "entries"])
def test_damage_after_handing_out_the_folder_is_reported(tmp_path, write_mode, loads, how):
    store = Store(tmp_path)
    key = Store.make_key("damaged", write_mode, how)
    store.put(key, np.arange(100, dtype=np.float32))
    assert store.get(key) is not None
    folder = store.entry_path(key) if how == "entry_path" else next(iter(store.entries()))
    npy = folder / "array.npy"
    data = bytearray(npy.read_bytes())
    data[-10] ^= 0xFF                      # same size, maybe the same timestamp tick
    npy.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning):
        assert store.get(key) is None
    assert key not in store


def test_verify_forgets_what_it_removes(tmp_path, loads):
    store = Store(tmp_path)
    key = Store.make_key("verify")
    store.put(key, np.arange(100, dtype=np.float32))
    store.flush()
    npy = tmp_path / key[:2] / key / "array.npy"   # changed without asking the store for the folder
    data = bytearray(npy.read_bytes())
    data[-10] ^= 0xFF
    npy.write_bytes(bytes(data))
    problems = store.verify()
    assert len(problems) == 1 and key in problems[0][0]
    assert store.get(key) is None and len(cache_mod._RECENT) == 0


def test_eviction_by_the_size_cap_forgets_the_evicted_entries(tmp_path, loads):
    store = Store(tmp_path, max_bytes="30KB")
    keys = [Store.make_key("cap", str(i)) for i in range(8)]
    for key in keys:
        store.put(key, np.zeros(1000))  # ~8 KB each
    present = [key in store for key in keys]
    assert not all(present) and present[-1]
    assert [store.get(key) is not None for key in keys] == present


def test_a_key_another_writer_placed_first_is_read_from_disk(tmp_path, loads, monkeypatch):
    monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    key = Store.make_key("first")
    Store(tmp_path).put(key, np.zeros(3))
    cache_mod._RECENT.forget()
    Store(tmp_path).put(key, np.ones(3))      # written once: this put changes nothing on disk
    assert Store(tmp_path).get(key).tolist() == [0.0, 0.0, 0.0]


def test_memory_is_bounded_least_recently_used_first(tmp_path, loads, monkeypatch):
    monkeypatch.setattr(cache_recent, "RECENT_BYTES", 2500)
    store = Store(tmp_path)
    keys = [Store.make_key("lru", str(i)) for i in range(3)]
    store.put(keys[0], np.zeros(125))   # 1000 bytes each
    store.put(keys[1], np.zeros(125))
    store.flush()
    store.get(keys[0])                  # now more recent than keys[1]
    store.put(keys[2], np.zeros(125))
    store.flush()
    assert len(cache_mod._RECENT) == 2 and cache_mod._RECENT._bytes == 2000
    loads.clear()
    store.get(keys[0])
    store.get(keys[2])
    assert loads == []
    store.get(keys[1])                  # read again, and kept in place of the least recent, keys[0]
    assert loads == [keys[1]]
    store.get(keys[2])
    store.get(keys[0])
    assert loads == [keys[1], keys[0]]


def test_large_entries_stay_on_disk(tmp_path, loads, monkeypatch):
    monkeypatch.setattr(cache_recent, "RECENT_ENTRY_BYTES", 100)
    store = Store(tmp_path)
    key = Store.make_key("large")
    store.put(key, np.zeros(100))
    store.flush()
    store.get(key)
    store.get(key)
    assert loads == [key, key] and len(cache_mod._RECENT) == 0


# clear() deletes entry folders in place, so a reader racing it may find one half deleted and report
# it as damaged (a miss all the same); that is older than the kept copies and not what is tested here.
@pytest.mark.filterwarnings("ignore::probes.errors.CacheCorruptionWarning")
def test_threads_reading_while_another_clears_see_values_or_misses(tmp_path, loads):
    import threading

    store = Store(tmp_path)
    keys = [Store.make_key("threads", str(i)) for i in range(20)]
    errors: list[BaseException] = []

    def read():
        try:
            for _ in range(20):
                for i, key in enumerate(keys):
                    got = Store(tmp_path).get(key)
                    assert got is None or got.tolist() == [float(i)] * 4
        except BaseException as exc:  # reported below
            errors.append(exc)

    for i, key in enumerate(keys):
        store.put(key, np.full(4, float(i)))
    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(5):
        Store(tmp_path).clear()
        for i, key in enumerate(keys):
            store.put(key, np.full(4, float(i)))
    for t in threads:
        t.join()
    assert not errors


# ------------------------------------------------------------------ random pool: files resolved once per folder
def test_resolving_by_folder_gives_what_resolving_each_path_gives(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from concepts.image_files import resolve_files

    real = tmp_path / "real"
    real.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (real / name).write_bytes(b"x")
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)   # a folder reached through a link
    (real / "link.png").symlink_to(real / "c.png")                    # a file that is itself a link
    (real / "away.png").symlink_to(tmp_path / "linked" / "a.png")     # a link through a linked folder
    os.link(real / "a.png", real / "hard.png")                         # another name of a: stays apart
    monkeypatch.chdir(tmp_path)
    files = [real / "a.png", Path("real/b.png"), tmp_path / "linked" / "c.png", real / "link.png",
             real / "away.png", real / "hard.png", Path("linked/../real/a.png"), real / "missing.png",
             tmp_path / "linked" / "a.png", "real/b.png"]
    got = resolve_files(files)
    assert got == {f: Path(f).resolve() for f in files}
    assert got[real / "link.png"] == real / "c.png" and got[real / "hard.png"] == real / "hard.png"
    assert len(set(got.values())) == 5  # a, b, c, hard, missing


def test_random_activations_rows_follow_the_resolved_union(tmp_path):
    from pathlib import Path

    from concepts.analysis import Analysis
    from concepts.sets import ImageSet

    real = tmp_path / "pool"
    real.mkdir()
    names = ["b.png", "a.png", "c.png"]
    for name in names:
        (real / name).write_bytes(b"x")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    sets = [ImageSet([real / "b.png", real / "a.png"], input_shape=(4, 4, 1)),
            ImageSet([tmp_path / "alias" / "c.png", tmp_path / "alias" / "b.png"], input_shape=(4, 4, 1))]

    class Engine:
        layers = ["l"]
        layer_widths = {"l": 1}

        def run(self, pool, allocate=None):
            self.pool = [Path(f) for f in pool.files]

            class Result:
                activations = {"l": np.arange(len(pool.files), dtype=np.float32)[:, None]}
            return Result()

    class Options:
        memory_budget = "1GB"

    analysis = Analysis.__new__(Analysis)
    analysis.engine, analysis.options = Engine(), Options()
    acts, rows = analysis._random_activations(sets, lambda value: value)
    assert analysis.engine.pool == [real / "a.png", real / "b.png", real / "c.png"]
    assert [r.tolist() for r in rows] == [[1, 0], [2, 1]]


# ------------------------------------------------------------------ folder listings kept per process
OLD_NS = 1_600_000_000 * 10 ** 9  # a timestamp long past: what a folder untouched for a while shows


@pytest.fixture
def scans(monkeypatch):
    """Count folder reads of list_image_files; every folder's timestamps count as settled."""
    from concepts import image_files

    seen: list[str] = []
    real = image_files._entries

    def counting(folder, recursive, read):
        seen.append(str(folder))
        return real(folder, recursive, read)

    monkeypatch.setattr(image_files, "_entries", counting)
    monkeypatch.setattr(image_files, "RACY_SECONDS", -60.0)
    image_files._LISTINGS.clear()
    yield seen
    image_files._LISTINGS.clear()


def _settle(*folders):
    import os

    for folder in folders:
        os.utime(folder, ns=(OLD_NS, OLD_NS))


def _pngs(folder, *names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(folder / name)


def test_an_unchanged_folder_is_listed_once(tmp_path, scans):
    from concepts.image_files import list_image_files

    _pngs(tmp_path / "f", "a.png", "b.png")
    _settle(tmp_path / "f")
    first = list_image_files(tmp_path / "f")
    first.append("changed by the caller")
    assert [p.name for p in list_image_files(tmp_path / "f")] == ["a.png", "b.png"]
    assert scans == [str(tmp_path / "f")]


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_a_changed_folder_is_listed_again(tmp_path, scans, change):
    from concepts.image_files import list_image_files

    folder = tmp_path / "f"
    _pngs(folder, "a.png", "b.png")
    _settle(folder)
    assert [p.name for p in list_image_files(folder)] == ["a.png", "b.png"]
    if change == "add":
        _pngs(folder, "c.png")
    elif change == "remove":
        (folder / "a.png").unlink()
    else:
        (folder / "b.png").rename(folder / "z.png")
    expected = {"add": ["a.png", "b.png", "c.png"], "remove": ["b.png"], "rename": ["a.png", "z.png"]}[change]
    assert [p.name for p in list_image_files(folder)] == expected
    assert len(scans) == 2


def test_a_change_in_a_subfolder_is_seen(tmp_path, scans):
    from concepts.image_files import list_image_files

    _pngs(tmp_path / "f" / "s1", "a.png")
    _pngs(tmp_path / "f" / "s2", "b.png")
    _settle(tmp_path / "f" / "s1", tmp_path / "f" / "s2", tmp_path / "f")
    assert [p.name for p in list_image_files(tmp_path / "f", recursive=True)] == ["a.png", "b.png"]
    _pngs(tmp_path / "f" / "s2", "c.png")
    assert [p.name for p in list_image_files(tmp_path / "f", recursive=True)] == ["a.png", "b.png", "c.png"]


def test_a_subfolder_that_becomes_a_dicom_series_is_seen(tmp_path, scans):
    from concepts.image_files import list_image_files

    _pngs(tmp_path / "f" / "s1", "a.png")
    _settle(tmp_path / "f" / "s1", tmp_path / "f")
    assert list_image_files(tmp_path / "f") == []          # no image directly in it
    assert list_image_files(tmp_path / "f") == [] and len(scans) == 1
    (tmp_path / "f" / "s1" / "x.dcm").write_bytes(b"")      # s1 is now a series: listed as one entry
    assert [p.name for p in list_image_files(tmp_path / "f")] == ["s1"]


def test_listings_with_symlinks_or_fresh_changes_are_not_kept(tmp_path, scans, monkeypatch):
    from concepts import image_files
    from concepts.image_files import list_image_files

    _pngs(tmp_path / "real", "a.png")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "a.png").symlink_to(tmp_path / "real" / "a.png")
    _settle(tmp_path / "real", tmp_path / "links")
    list_image_files(tmp_path / "links")
    list_image_files(tmp_path / "links")
    monkeypatch.setattr(image_files, "RACY_SECONDS", 2.0)
    _pngs(tmp_path / "fresh", "a.png")
    list_image_files(tmp_path / "fresh")
    list_image_files(tmp_path / "fresh")
    assert scans == [str(tmp_path / "links")] * 2 + [str(tmp_path / "fresh")] * 2


def test_random_sets_use_a_file_added_between_calls(tmp_path, scans):
    from concepts.sets import random_sets

    for k in range(2):
        _pngs(tmp_path / "random" / f"set_{k}", "a.png", "b.png")
    _settle(tmp_path / "random" / "set_0", tmp_path / "random" / "set_1", tmp_path / "random")
    before = random_sets(tmp_path / "random", 2, None)
    assert [len(s) for s in before] == [2, 2]
    _pngs(tmp_path / "random" / "set_1", "c.png")
    after = random_sets(tmp_path / "random", 2, None)
    assert [f.name for f in after[1].files] == ["a.png", "b.png", "c.png"]


def test_a_random_folder_emptied_between_calls_gets_the_same_error(tmp_path, scans):
    import shutil

    from concepts.errors import ConceptFolderError
    from concepts.sets import random_sets

    _pngs(tmp_path / "random", *[f"r{i}.png" for i in range(4)])
    _settle(tmp_path / "random")
    assert len(random_sets(tmp_path / "random", 2, 2)) == 2
    shutil.rmtree(tmp_path / "random")
    (tmp_path / "random").mkdir()
    with pytest.raises(ConceptFolderError, match="is empty"):
        random_sets(tmp_path / "random", 2, 2)


# ------------------------------------------------------------------ screening and image sets of a pool
def test_a_file_damaged_between_calls_is_reported(tmp_path, monkeypatch):
    from concepts import screening
    from concepts.errors import ImageReadError

    _pngs(tmp_path, "a.png", "b.png")
    good = (tmp_path / "a.png").read_bytes()
    assert screening.screen({"concept 'x'": [tmp_path / "a.png", tmp_path / "b.png"]}) == {}
    # The same size, written at once (maybe within one timestamp tick of the check): checked again.
    (tmp_path / "a.png").write_bytes(bytes(len(good)))
    with pytest.raises(ImageReadError, match=r"a\.png: not a readable image"):
        screening.screen({"concept 'x'": [tmp_path / "a.png", tmp_path / "b.png"]})
    monkeypatch.setattr(screening, "RACY_SECONDS", -60.0)  # now every answer is memoised
    assert screening.image_problem(tmp_path / "b.png") is None
    (tmp_path / "b.png").write_bytes(good[:40])
    assert screening.image_problem(tmp_path / "b.png").startswith("not a readable image")


def test_screening_reads_a_path_as_path_spells_it(tmp_path):
    from concepts.screening import image_problem

    _pngs(tmp_path, "a.png")
    assert image_problem(f"{tmp_path}/./a.png/") is None and image_problem(str(tmp_path / "a.png")) is None
    assert image_problem(tmp_path / "missing.png") == "does not exist"


def test_an_image_set_keeps_the_paths_it_is_given():
    from pathlib import Path, PurePosixPath

    from concepts.sets import ImageSet

    given = Path("a.png")
    files = ImageSet([given, "b.png", PurePosixPath("c.png")]).files
    assert files[0] is given and files == [Path("a.png"), Path("b.png"), Path("c.png")]
    assert all(type(f) is type(Path()) for f in files)


# ------------------------------------------------------------------ content keys of image sets
@pytest.fixture
def hashes(monkeypatch):
    """Count file hashes asked for by content keys; every file's timestamps count as settled."""
    from probes import identity

    from concepts import sets

    seen: list[str] = []
    real = sets.file_sha256

    def counting(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(sets, "file_sha256", counting)
    monkeypatch.setattr(sets, "RACY_SECONDS", -60.0)
    monkeypatch.setattr(identity, "RACY_SECONDS", -60.0)
    sets._CONTENT_KEYS.clear()
    yield seen
    sets._CONTENT_KEYS.clear()


def test_the_key_of_an_unchanged_set_is_computed_once(tmp_path, hashes):
    from concepts.sets import ImageSet

    _pngs(tmp_path, "a.png")
    (tmp_path / "b.png").write_bytes(b"not the same bytes")
    first = ImageSet([tmp_path / "a.png", tmp_path / "b.png"], input_shape=(8, 8, 1))
    key = first.content_key
    again = ImageSet([str(tmp_path / "a.png"), tmp_path / "b.png"], input_shape=(8, 8, 1))
    assert again.content_key == key and len(hashes) == 2
    assert first.bind((4, 4, 1)).content_key != key            # another shape: another key
    assert ImageSet([tmp_path / "b.png", tmp_path / "a.png"], input_shape=(8, 8, 1)).content_key != key


def test_a_file_changed_between_calls_changes_the_key(tmp_path, hashes, monkeypatch):
    from probes import identity

    from concepts import sets
    from concepts.sets import ImageSet

    _pngs(tmp_path, "a.png", "b.png")
    (tmp_path / "c.png").write_bytes(b"other bytes")
    images = ImageSet([tmp_path / "a.png", tmp_path / "b.png"], input_shape=(8, 8, 1))
    before = images.content_key
    (tmp_path / "b.png").write_bytes(b"other bytes")          # another size
    changed = images.content_key
    assert changed != before
    assert changed == ImageSet([tmp_path / "a.png", tmp_path / "c.png"], input_shape=(8, 8, 1)).content_key
    # With the real rule, a same-size rewrite within one timestamp tick is seen too: nothing fresh is kept.
    monkeypatch.setattr(sets, "RACY_SECONDS", 2.0)
    monkeypatch.setattr(identity, "RACY_SECONDS", 2.0)
    sets._CONTENT_KEYS.clear()
    (tmp_path / "c.png").write_bytes(b"OTHER BYTES")
    assert images.content_key == changed
    (tmp_path / "b.png").write_bytes(b"OTHER BYTES")
    assert images.content_key != changed
    assert images.content_key == ImageSet([tmp_path / "a.png", tmp_path / "c.png"],
                                          input_shape=(8, 8, 1)).content_key


def test_a_missing_file_still_fails_the_key(tmp_path, hashes):
    from concepts.sets import ImageSet

    _pngs(tmp_path, "a.png")
    images = ImageSet([tmp_path / "a.png"], input_shape=(8, 8, 1))
    images.content_key
    (tmp_path / "a.png").unlink()
    with pytest.raises(FileNotFoundError):
        images.content_key


def test_forgetting_the_file_hashes_forgets_the_set_keys(tmp_path, hashes, monkeypatch):
    from probes import identity

    from concepts.sets import ImageSet

    _pngs(tmp_path, "a.png")
    images = ImageSet([tmp_path / "a.png"], input_shape=(8, 8, 1))
    key = images.content_key
    assert images.content_key == key and len(hashes) == 1
    identity.forget_files()   # "after bulk changes on a file system with coarse clocks"
    assert images.content_key == key and len(hashes) == 2
