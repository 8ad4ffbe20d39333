"""Tests of concepts.sets: default preprocessing, lazy batches, errors, content keys, random sets."""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from concepts import sets as sets_module
from concepts.errors import ConceptFolderError, ImageReadError, InputShapeError, InsufficientDataError
from concepts.sets import (DEFAULT_PREPROCESS_ID, ImageSet, default_preprocess, preprocess_identity,
                           random_sets)
from probes.sources import ArraySource


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)).save(path)
    return path


def _gray_folder(folder: Path, n: int, size: int = 8, start: int = 0) -> list[Path]:
    """n distinct 8-bit gray PNGs named 000.png, 001.png, ..."""
    return [_png(folder / f"{i:03d}.png", np.full((size, size), (start + i) % 256, np.uint8))
            for i in range(n)]


# -- default preprocessing ---------------------------------------------------------------------------

def test_uint8_gray_to_rgb_repeats_and_scales(tmp_path):
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = default_preprocess(img, (8, 8, 3))
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], img / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_rgb_to_gray_luminance_on_constant_colour():
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[...] = (200, 100, 50)
    out = default_preprocess(rgb, (6, 6, 1))
    expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert out.shape == (6, 6, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # Rank-2 models (no channel axis) get (H, W).
    out2 = default_preprocess(rgb, (6, 6))
    assert out2.shape == (6, 6)
    np.testing.assert_allclose(out2, expected, rtol=1e-5)


def test_rgba_alpha_dropped_and_2_channels_rejected():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    out = default_preprocess(rgba, (4, 4, 3))
    np.testing.assert_array_equal(out[..., 0], 1.0)
    np.testing.assert_array_equal(out[..., 1:], 0.0)
    assert default_preprocess(rgba, (4, 4, 4)).shape == (4, 4, 4)  # a 4-channel model keeps alpha
    with pytest.raises(InputShapeError, match="2-channel"):
        default_preprocess(np.zeros((4, 4, 2), np.uint8), (4, 4, 3))


def test_dtype_scaling():
    assert default_preprocess(np.full((2, 2), 65535, np.uint16), (2, 2, 1)).max() == 1.0
    assert default_preprocess(np.full((2, 2), True), (2, 2, 1)).min() == 1.0
    np.testing.assert_allclose(default_preprocess(np.full((2, 2), 2 ** 31 - 1, np.int32), (2, 2, 1)), 1.0)
    floats = np.full((2, 2), 3.5, np.float64)  # floats are assumed scaled already: unchanged
    np.testing.assert_array_equal(default_preprocess(floats, (2, 2, 1)), 3.5)


def test_resize_and_free_size():
    img = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = default_preprocess(img, (16, 20, 3))
    assert out.shape == (16, 20, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Shrinking a constant image keeps its value (bilinear + antialias is an average).
    const = default_preprocess(np.full((64, 64), 128, np.uint8), (7, 9, 1))
    np.testing.assert_allclose(const, 128 / 255, rtol=1e-5)
    assert default_preprocess(img, (None, None, 3)).shape == (40, 30, 3)
    assert default_preprocess(img, (None, None, 1)).shape == (40, 30, 1)
    # Deterministic.
    np.testing.assert_array_equal(out, default_preprocess(img, (16, 20, 3)))


# -- reading files -----------------------------------------------------------------------------------

def test_files_of_every_format(tmp_path):
    _png(tmp_path / "gray8.png", np.full((10, 12), 255, np.uint8))
    _png(tmp_path / "rgb.png", np.full((10, 12, 3), 255, np.uint8))
    _png(tmp_path / "rgba.png", np.full((10, 12, 4), 255, np.uint8))
    Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(tmp_path / "gray16.png")
    _png(tmp_path / "photo.jpg", np.full((10, 12, 3), 255, np.uint8))
    tifffile.imwrite(tmp_path / "t8.tif", np.full((10, 12), 255, np.uint8))
    tifffile.imwrite(tmp_path / "t16.tiff", np.full((10, 12), 65535, np.uint16))
    tifffile.imwrite(tmp_path / "t16rgb.tif", np.full((10, 12, 3), 65535, np.uint16))
    (tmp_path / "notes.txt").write_text("not an image")
    s = ImageSet.from_folder(tmp_path, input_shape=(5, 6, 3))
    assert len(s) == 8 and s.name == tmp_path.name
    assert isinstance(s, ArraySource)
    batch = s.load_all()
    assert batch.shape == (8, 5, 6, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, 1.0, atol=1e-6)  # white in every format and bit depth
    gray = s.bind((5, 6, 1)).load_all()
    assert gray.shape == (8, 5, 6, 1)
    np.testing.assert_allclose(gray, 1.0, atol=1e-5)


def test_batches_are_lazy(tmp_path, monkeypatch):
    files = _gray_folder(tmp_path / "c", 10)
    reads: list[Path] = []
    real = sets_module.read_image

    def counting(path):
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(sets_module, "read_image", counting)
    s = ImageSet.from_folder(tmp_path / "c", input_shape=(8, 8, 1))
    it = s.batches(3)
    assert reads == []  # nothing is read before iterating
    first = next(it)
    assert first.shape == (3, 8, 8, 1)
    assert reads == files[:3]
    shapes = [b.shape[0] for b in it]
    assert shapes == [3, 3, 1] and reads == files
    np.testing.assert_allclose(first[:, 0, 0, 0], np.array([0, 1, 2]) / 255, rtol=1e-6)


def test_unbound_set_and_bad_batch_size(tmp_path):
    _gray_folder(tmp_path / "c", 2)
    s = ImageSet.from_folder(tmp_path / "c")
    with pytest.raises(InputShapeError, match="bind"):
        s.batches(2)
    with pytest.raises(InputShapeError, match="bind"):
        s.content_key
    with pytest.raises(ValueError):
        s.bind((8, 8, 1)).batches(0)
    assert s.bind((None, 8, 8, 1)).input_shape == (8, 8, 1)  # Keras' batch dimension is dropped
    assert "ImageSet('c', n=2" in repr(s)


def test_corrupt_file_names_it(tmp_path):
    _gray_folder(tmp_path / "c", 2)
    (tmp_path / "c" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    s = ImageSet.from_folder(tmp_path / "c", input_shape=(8, 8, 1))
    with pytest.raises(ImageReadError, match="bad.png"):
        s.load_all()


def test_folder_errors(tmp_path):
    with pytest.raises(ConceptFolderError, match="does not exist"):
        ImageSet.from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConceptFolderError, match="is empty"):
        ImageSet.from_folder(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    for name in ("a.txt", "b.dcm", "c.csv"):
        (tmp_path / "text" / name).write_text("x")
    with pytest.raises(ConceptFolderError, match=r"contains 3 files but none is an image \(.png"):
        ImageSet.from_folder(tmp_path / "text")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ConceptFolderError, match="not a folder"):
        ImageSet.from_folder(tmp_path / "file.png")
    _gray_folder(tmp_path / "nested" / "inner", 2)
    with pytest.raises(ConceptFolderError, match="recursive=True"):
        ImageSet.from_folder(tmp_path / "nested")
    assert len(ImageSet.from_folder(tmp_path / "nested", recursive=True)) == 2


def test_custom_preprocess_wrong_shape_names_file(tmp_path):
    _gray_folder(tmp_path / "c", 2)

    def no_resize(image, input_shape):
        return image[..., None].astype(np.float32)

    s = ImageSet.from_folder(tmp_path / "c", input_shape=(4, 4, 1), preprocess=no_resize)
    with pytest.raises(InputShapeError, match=r"000\.png.*\(8, 8, 1\).*\(4, 4, 1\)"):
        next(s.batches(2))
    # The default's channel errors name the file too.
    _png(tmp_path / "d" / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    s2 = ImageSet.from_folder(tmp_path / "d", input_shape=(4, 4, 2))
    with pytest.raises(InputShapeError, match="rgb.png"):
        s2.load_all()


def test_free_size_model_with_mixed_sizes(tmp_path):
    _png(tmp_path / "c" / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "c" / "b.png", np.zeros((5, 4), np.uint8))
    s = ImageSet.from_folder(tmp_path / "c", input_shape=(None, None, 1))
    # One set is one activation array: one size, across batches too; the error names a file of each size.
    with pytest.raises(InputShapeError, match=r"different sizes .*4x4x1 \(e\.g\. '.*a\.png'\); 5x4x1"):
        list(s.batches(1))
    with pytest.raises(InputShapeError, match="different sizes"):
        s.load_all()


# -- content keys ------------------------------------------------------------------------------------

def _double(image, input_shape):
    return default_preprocess(image, input_shape) * 2


def _scaled(image, input_shape, factor=1.0):
    return default_preprocess(image, input_shape) * factor


def test_content_key(tmp_path):
    files = _gray_folder(tmp_path / "c", 3)
    s = ImageSet.from_folder(tmp_path / "c", input_shape=(8, 8, 1))
    key = s.content_key
    assert key == s.content_key == ImageSet(files, input_shape=(8, 8, 1)).content_key
    assert len(key) == 64
    # A renamed copy with the same bytes, in the same order, gives the same key.
    shutil.copytree(tmp_path / "c", tmp_path / "copy")
    renamed = sorted((tmp_path / "copy").iterdir())
    for i, path in enumerate(renamed):
        path.rename(path.with_name(f"img_{i}.png"))
    assert ImageSet.from_folder(tmp_path / "copy", input_shape=(8, 8, 1)).content_key == key
    # Order, input shape and preprocessing enter the key.
    assert s.subset([2, 1, 0]).content_key != key
    assert s.subset([0, 1, 2]).content_key == key
    assert s.bind((16, 16, 1)).content_key != key
    assert ImageSet(files, input_shape=(8, 8, 1), preprocess=_double).content_key != key
    assert ImageSet(files, input_shape=(8, 8, 1), preprocess=default_preprocess).content_key == key
    by2 = ImageSet(files, input_shape=(8, 8, 1), preprocess=functools.partial(_scaled, factor=2))
    by3 = ImageSet(files, input_shape=(8, 8, 1), preprocess=functools.partial(_scaled, factor=3))
    assert by2.content_key != by3.content_key
    # One changed byte changes the key (a new mtime/size invalidates the memoised file hash).
    data = bytearray(files[1].read_bytes())
    data[-5] ^= 0xFF
    files[1].write_bytes(bytes(data))
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    assert ImageSet.from_folder(tmp_path / "c", input_shape=(8, 8, 1)).content_key != key


def test_preprocess_identity():
    assert preprocess_identity(None) == preprocess_identity(default_preprocess) == DEFAULT_PREPROCESS_ID
    assert "_double" in preprocess_identity(_double)

    def factory(scale):
        def pre(image, input_shape):
            return default_preprocess(image, input_shape) * scale
        return pre

    assert preprocess_identity(factory(1)) != preprocess_identity(factory(2))
    assert preprocess_identity(factory(1)) == preprocess_identity(factory(1))


def test_subset_and_concat(tmp_path):
    a = ImageSet(_gray_folder(tmp_path / "a", 3), input_shape=(8, 8, 1))
    b = ImageSet(_gray_folder(tmp_path / "b", 2, start=10), input_shape=(8, 8, 1))
    both = ImageSet.concat([a, b], name="a+b")
    assert len(both) == 5 and both.name == "a+b" and both.input_shape == (8, 8, 1)
    np.testing.assert_allclose(both.load_all()[:, 0, 0, 0], np.array([0, 1, 2, 10, 11]) / 255, rtol=1e-6)
    sub = both.subset([4, 0], name="picked")
    assert sub.files == [b.files[1], a.files[0]] and sub.input_shape == (8, 8, 1)
    with pytest.raises(InputShapeError):
        ImageSet.concat([a, b.bind((4, 4, 1))], name="x")
    with pytest.raises(InputShapeError, match="preprocessing"):
        ImageSet.concat([a, ImageSet(b.files, input_shape=(8, 8, 1), preprocess=_double)], name="x")
    with pytest.raises(InsufficientDataError):
        ImageSet.concat([], name="x")


# -- random sets -------------------------------------------------------------------------------------

def test_random_sets_from_subfolders(tmp_path):
    root = tmp_path / "random"
    for k, n in enumerate((6, 5, 7, 5)):
        _gray_folder(root / f"set_{k:02d}", n, start=20 * k)
    sets = random_sets(root, 3, 5, seed=1, input_shape=(8, 8, 1))
    assert [s.name for s in sets] == ["set_00", "set_01", "set_02"]
    assert all(len(s) == 5 for s in sets) and all(s.input_shape == (8, 8, 1) for s in sets)
    assert all(f.parent.name == "set_00" for f in sets[0].files)
    again = random_sets(root, 3, 5, seed=1)
    assert [s.files for s in again] == [s.files for s in sets]
    whole = random_sets(root, 4, None)
    assert [len(s) for s in whole] == [6, 5, 7, 5]
    # A set smaller than the concept is used whole (each CAV fit balances its sides), not an error.
    assert [len(s) for s in random_sets(root, 2, 6)] == [6, 5]
    with pytest.raises(InsufficientDataError, match=r"Found 4 random sets.*5 were requested.*n_random=4"):
        random_sets(root, 5, 5)


def test_random_sets_from_pool(tmp_path):
    pool = _gray_folder(tmp_path / "random", 30)
    sets = random_sets(tmp_path / "random", 6, 10, seed=0, input_shape=(8, 8, 1))
    assert [s.name for s in sets] == [f"random_{k:03d}" for k in range(6)]
    assert all(len(s) == 10 and len(set(s.files)) == 10 for s in sets)
    assert all(set(s.files) <= set(pool) for s in sets)
    same = random_sets(tmp_path / "random", 6, 10, seed=0)
    assert [s.files for s in same] == [s.files for s in sets]
    assert same[0].bind((8, 8, 1)).content_key == sets[0].content_key
    other = random_sets(tmp_path / "random", 6, 10, seed=1)
    assert [s.files for s in other] != [s.files for s in sets]
    # Set k depends only on (seed, k): more sets keep the first ones.
    more = random_sets(tmp_path / "random", 9, 10, seed=0)
    assert [s.files for s in more[:6]] == [s.files for s in sets]
    with pytest.raises(InsufficientDataError, match="has 30 images, fewer than the set size 31"):
        random_sets(tmp_path / "random", 2, 31)


def test_random_sets_pool_in_single_subfolder_and_exclude(tmp_path):
    pool = _gray_folder(tmp_path / "random" / "all", 12)
    excluded = pool[:4]
    sets = random_sets(tmp_path / "random", 5, 6, exclude=excluded)
    for s in sets:
        assert len(s) == 6 and not set(s.files) & set(excluded)
    with pytest.raises(InsufficientDataError, match="after leaving out"):
        random_sets(tmp_path / "random", 5, 9, exclude=excluded)
    with pytest.raises(InsufficientDataError, match="set_size must be given"):
        random_sets(tmp_path / "random", 5, None)


def test_random_sets_exclude_the_same_file_under_another_path(tmp_path):
    # A concept image that also sits in the pool as a symlink, a hard link or through a relative path
    # is the same file: it must never be a counterexample to itself.
    concept = _gray_folder(tmp_path / "concept", 3)
    pool = _gray_folder(tmp_path / "random", 8)
    os.symlink(concept[0], tmp_path / "random" / "link_0.png")
    os.link(concept[1], tmp_path / "random" / "hard_1.png")
    shutil.copy(concept[2], tmp_path / "random" / "copy_2.png")  # a copy is another file: it stays
    relative = [os.path.relpath(p) for p in concept]
    sets = random_sets(tmp_path / "random", 1, 9, exclude=relative)
    names = {f.name for f in sets[0].files}
    assert "link_0.png" not in names and "hard_1.png" not in names
    assert names == {p.name for p in pool} | {"copy_2.png"}


def test_random_sets_from_imagesets_and_folder_errors(tmp_path):
    given = [ImageSet(_gray_folder(tmp_path / f"s{k}", 4), name=f"s{k}") for k in range(3)]
    out = random_sets(given, 2, 3, input_shape=(8, 8, 1))
    assert [s.name for s in out] == ["s0", "s1"]
    assert all(len(s) == 3 and s.input_shape == (8, 8, 1) for s in out)
    with pytest.raises(ConceptFolderError, match="does not exist"):
        random_sets(tmp_path / "nope", 2, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConceptFolderError, match="is empty"):
        random_sets(tmp_path / "empty", 2, 3)
    mixed = tmp_path / "mixed"
    _gray_folder(mixed, 3)
    _gray_folder(mixed / "a", 3)
    _gray_folder(mixed / "b", 3)
    with pytest.raises(ConceptFolderError, match="both"):
        random_sets(mixed, 2, 3)


def test_identical_sets_warn(tmp_path):
    _gray_folder(tmp_path / "random", 4)
    with pytest.warns(UserWarning, match="identical"):
        random_sets(tmp_path / "random", 3, 4)
