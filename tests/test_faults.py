"""Fault campaign: bad images, bad folders, bad options, bad models, a damaged cache, killed writers.

Every case asserts either that the error names the culprit (file, folder, option, class, entry)
or that the run completes with results identical to a clean run. Everything is tiny (16×16
images, the planted-concept model of ``synthetic.py``) so the campaign takes seconds per case.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import multiprocessing as mp  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import concepts  # noqa: E402
from concepts.errors import ConceptFolderError, ImageReadError  # noqa: E402
from concepts.validation import PARAMETER_CONSTRAINTS, OptionError  # noqa: E402
from probes.cache import Store  # noqa: E402
from probes.errors import CacheCorruptionWarning, ToolkitError  # noqa: E402
from synthetic import build_model, make_data, noise, write_png  # noqa: E402

FAST = dict(n_random=4, n_directions=50, progress=False)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    return build_model()


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("clean"), n_class=6, n_concept=8, n_pool=40)


@pytest.fixture(scope="module")
def clean(model, clean_data):
    """The reference table of a clean run without any cache."""
    return concepts.score(model, "conv1", clean_data / "concepts" / "horizontal", cache_dir=False, **FAST).to_frame()


@pytest.fixture
def data(clean_data, tmp_path):
    """A private copy of the clean data to damage."""
    return Path(shutil.copytree(clean_data, tmp_path / "data"))


def _score(model, data, **kwargs):
    options = {**FAST, "cache_dir": False, **kwargs}
    return concepts.score(model, "conv1", data / "concepts" / "horizontal", **options)


def _same(table: pd.DataFrame, clean: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(table.reset_index(drop=True), clean.reset_index(drop=True))


# ------------------------------------------------------------------------------------------ bad images
def test_truncated_png_is_named(model, data):
    bad = data / "concepts" / "horizontal" / "h003.png"
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(ImageReadError, match=r"h003\.png.*truncated"):
        _score(model, data)


def test_zero_byte_file_is_named(model, data):
    (data / "concepts" / "horizontal" / "h003.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"h003\.png: empty file"):
        _score(model, data)


def test_text_with_an_image_extension_is_named(model, data):
    (data / "classes" / "striped" / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.png: not a readable image.*class 'striped'"):
        _score(model, data)


def test_png_with_a_jpeg_extension_gives_the_clean_result(model, data, clean):
    # The decoder goes by content; the name sorts at the same place, so the sets are the same.
    folder = data / "concepts" / "horizontal"
    (folder / "h000.png").rename(folder / "h000.jpg")
    _same(_score(model, data).to_frame(), clean)


def _same_findings(table: pd.DataFrame, clean: pd.DataFrame) -> None:
    # Other file bytes give other content keys, hence other seeded splits: the findings, not the
    # last digits, must agree.
    assert table[["class", "concept", "significant"]].equals(clean[["class", "concept", "significant"]])
    assert (np.sign(table["ubs"]) == np.sign(clean["ubs"])).all()


def test_16_bit_images_give_the_same_model_inputs(model, data, clean, clean_data):
    # v/255 and (257 v)/65535 are the same number: scaling by dtype makes 8 and 16 bit agree exactly.
    for path in (data / "concepts" / "horizontal").glob("*.png"):
        pixels = np.asarray(Image.open(path)).astype(np.uint16) * 257
        Image.fromarray(pixels).save(path)
        assert Image.open(path).mode.startswith("I")
    eight = concepts.ImageSet.from_folder(clean_data / "concepts" / "horizontal", input_shape=(16, 16, 1))
    sixteen = concepts.ImageSet.from_folder(data / "concepts" / "horizontal", input_shape=(16, 16, 1))
    np.testing.assert_array_equal(sixteen.load_all(), eight.load_all())
    _same_findings(_score(model, data).to_frame(), clean)


def test_float_tiff_with_nan_is_named(model, data):
    import tifffile

    image = np.full((16, 16), 0.5, np.float32)
    image[3, 4] = np.nan
    tifffile.imwrite(data / "concepts" / "horizontal" / "nan.tif", image)
    with pytest.raises(ImageReadError, match=r"nan\.tif: 1 pixel value\(s\) are NaN"):
        _score(model, data)


def test_rgba_images_give_the_same_model_inputs_as_rgb(model, data, clean):
    folder = data / "concepts" / "horizontal"
    for path in folder.glob("*.png"):
        gray = np.asarray(Image.open(path))
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path)
    rgb = concepts.ImageSet.from_folder(folder, input_shape=(16, 16, 1)).load_all()
    for path in folder.glob("*.png"):
        rgb_pixels = np.asarray(Image.open(path))
        alpha = np.full(rgb_pixels.shape[:2] + (1,), 77, np.uint8)
        Image.fromarray(np.concatenate([rgb_pixels, alpha], axis=-1), mode="RGBA").save(path)
    np.testing.assert_array_equal(concepts.ImageSet.from_folder(folder, input_shape=(16, 16, 1)).load_all(), rgb)
    _same_findings(_score(model, data).to_frame(), clean)


def test_huge_image_is_named(model, data, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 16x16 images pass; 2000+ pixels is a "bomb"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "random" / "huge.png")
    with pytest.raises(ImageReadError, match=r"huge\.png: not a readable image \(DecompressionBombError"):
        _score(model, data)


def test_tiny_image_is_used(model, data, clean):
    write_png(data / "concepts" / "horizontal" / "h999.png", np.full((1, 1), 0.5))
    result = _score(model, data)
    assert result.provenance["concepts"]["horizontal"]["n_images"] == 9
    assert len(result.to_frame()) == len(clean)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_truncated_jpeg_and_tiff_are_caught_by_the_cheap_check(tmp_path, suffix):
    from concepts.screening import image_problem

    path = tmp_path / f"scan{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    assert image_problem(path) is None
    whole = path.read_bytes()
    path.write_bytes(whole + b"\0" * 200)  # bytes appended after the end marker: still a good image
    assert image_problem(path) is None
    path.write_bytes(whole[: len(whole) // 2])
    assert "truncated" in image_problem(path)


def test_every_bad_file_in_every_folder_is_listed_in_one_error(model, data):
    (data / "concepts" / "horizontal" / "h001.png").write_bytes(b"")
    (data / "classes" / "other" / "o002.png").write_bytes(b"GIF89a garbage")
    pool_file = data / "random" / "r0005.png"
    pool_file.write_bytes(pool_file.read_bytes()[:40])
    with pytest.raises(ImageReadError) as info:
        _score(model, data)
    message = str(info.value)
    assert message.startswith("3 image file(s) cannot be used")
    for name, where in (("h001.png", "concept 'horizontal'"), ("o002.png", "class 'other'"),
                        ("r0005.png", "random")):
        assert name in message and where in message
    assert "on_error='skip'" in message


def test_skipped_images_give_the_clean_result_and_are_recorded(model, data, clean):
    bad = data / "concepts" / "horizontal" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n cut")
    with pytest.warns(UserWarning, match=r"(?s)Leaving out 1 image file.*zz_broken\.png"):
        result = _score(model, data, on_error="skip")
    _same(result.to_frame(), clean)
    skipped = result.provenance["skipped_images"]
    assert [Path(s["path"]).name for s in skipped] == ["zz_broken.png"] and "not a readable image" in skipped[0]["reason"]


def test_report_lists_skipped_images(model, data, tmp_path):
    (data / "concepts" / "horizontal" / "zz_empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="zz_empty"):
        rep = concepts.report(model, ["conv1"], concepts=[data / "concepts" / "horizontal"], data=data,
                              cache_dir=False, on_error="skip", **FAST)
    html = rep.save(tmp_path / "report")["html"].read_text(encoding="utf-8")
    notes = html.split('<section id="notes">', 1)[1].split("</section>", 1)[0]
    assert "1 image file(s) could not be used" in notes and "zz_empty.png (empty file (0 bytes))" in notes


# ------------------------------------------------------------------------------------------ bad folders
def test_empty_concept_folder_is_named(model, data):
    empty = data / "concepts" / "empty_one"
    empty.mkdir()
    with pytest.raises(ConceptFolderError, match="empty_one.*is empty"):
        concepts.score(model, "conv1", empty, cache_dir=False, **FAST)


def test_missing_concept_folder_is_named(model, data):
    with pytest.raises(ConceptFolderError, match="no_such_concept.*does not exist"):
        concepts.score(model, "conv1", data / "concepts" / "no_such_concept", cache_dir=False, **FAST)


def test_nested_concept_folder_is_explained(model, data):
    nested = data / "concepts" / "nested"
    shutil.copytree(data / "concepts" / "horizontal", nested / "inner")
    with pytest.raises(ConceptFolderError, match=r"nested.*subfolder.*inner.*recursive=True"):
        concepts.score(model, "conv1", nested, cache_dir=False, **FAST)


def test_unreadable_file_is_named(model, data):
    bad = data / "concepts" / "horizontal" / "h002.png"
    bad.chmod(0)
    try:
        if os.access(bad, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading, so there is no fault to inject")
        with pytest.raises(ImageReadError, match=r"h002\.png"):
            _score(model, data)
    finally:
        bad.chmod(0o644)


def test_symlink_loops_are_ignored(model, data, clean):
    (data / "concepts" / "horizontal" / "loop").symlink_to(data / "concepts" / "horizontal")
    (data / "random" / "loop").symlink_to(data / "random")
    start = time.perf_counter()
    _same(_score(model, data).to_frame(), clean)
    assert time.perf_counter() - start < 60
    from concepts.manifests import write_manifest

    manifest = json.loads(write_manifest(data, data.parent / "m.json").read_text(encoding="utf-8"))
    assert not any("loop/loop" in f["path"] for f in manifest["files"])


def test_repeated_class_in_classes_txt_is_named(model, data):
    (data / "classes.txt").write_text("striped\nother\nstriped\n")
    with pytest.raises(ConceptFolderError, match=r"'striped' on lines 1, 3"):
        _score(model, data)


def test_random_subfolders_smaller_than_the_concept_are_balanced(model, data):
    shutil.rmtree(data / "random")
    rng = np.random.default_rng(1)
    for s in range(4):
        for i in range(7):  # 7 random images per set against a concept of 8
            write_png(data / "random" / f"set_{s}" / f"{i}.png", noise(rng))
    result = _score(model, data)
    balancing = result.provenance["set_balancing"]
    assert balancing["concept_sizes"] == {"horizontal": 8} and balancing["random_set_sizes"] == [7] * 4
    assert "balanced" in balancing["rule"]
    assert result.to_frame()["significant"].any()  # the planted concept is still found


def test_missing_random_folder_is_named(model, data):
    shutil.rmtree(data / "random")
    with pytest.raises(ConceptFolderError, match="random"):
        _score(model, data)


# ------------------------------------------------------------------------------------------ bad options
@pytest.mark.parametrize("option, value, expected", [
    ("correction", "holmes", "Did you mean 'holm'"),
    ("pool", "avg", "'auto' or True or False"),
    ("significance", 5, "0 < x < 1"),
    ("target", "logits", "Did you mean 'logit'"),
    ("null_pairs", "every", "'all'"),
    ("n_random", "ten", "an integer"),
    ("alpha", -1.0, "'auto' or a number with 0 < x"),
    ("on_error", "ignore", "'raise', 'skip'"),
    ("progress", "yes", "True or False"),
])
def test_bad_option_fails_before_any_compute(model, clean_data, option, value, expected):
    start = time.perf_counter()
    with pytest.raises(OptionError, match=f"^{option}=") as info:
        concepts.score(model, "conv1", clean_data / "concepts" / "horizontal", cache_dir=False,
                       **{**FAST, option: value})
    assert time.perf_counter() - start < 1.0
    assert expected in str(info.value)


def test_report_and_rank_measures_validate_first(model, clean_data):
    with pytest.raises(OptionError, match="statistic='tcav'.*'score', 'shift', 'ubs'"):
        concepts.report(model, ["conv1"], data=clean_data, statistic="tcav", cache_dir=False)
    table = pd.DataFrame({"m": [1.0, 2.0]}, index=["a.png", "b.png"])
    with pytest.raises(OptionError, match="correction='BH-FDR'"):
        concepts.rank_measures(model, ["conv1"], table, correction="BH-FDR")


def test_every_keyword_of_the_public_functions_is_constrained():
    import inspect

    from concepts.ranking import rank_measures
    from concepts.reporting import report
    from concepts.scoring import score

    for function in (score, report, rank_measures):
        names = set(inspect.signature(function).parameters) - {"model"}
        assert not names - set(PARAMETER_CONSTRAINTS), function.__name__


# ------------------------------------------------------------------------------------------ bad models
def test_model_without_an_output_graph_is_explained(clean_data):
    import keras

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ToolkitError, match="has not been built"):
        concepts.score(unbuilt, "dense", clean_data / "concepts" / "horizontal", cache_dir=False, **FAST)


def test_two_outputs_are_explained(clean_data):
    import keras

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv1")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    two = keras.Model(inputs, [keras.layers.Dense(2, name="a")(pooled), keras.layers.Dense(3, name="b")(pooled)])
    with pytest.raises(ToolkitError, match=r"has 2 outputs \(0: 'a', 1: 'b'\); say which one to explain with output="):
        concepts.score(two, "conv1", clean_data / "concepts" / "horizontal", cache_dir=False, **FAST)


# ------------------------------------------------------------------------------------------ damaged cache
def _entries_by_kind(store: Store) -> dict[str, list[Path]]:
    kinds: dict[str, list[Path]] = {}
    for entry in store.entries():
        meta = json.loads((entry / "entry.json").read_text(encoding="utf-8"))["meta"]
        kinds.setdefault(meta.get("kind", "?"), []).append(entry)
    return kinds


def test_warm_cache_gives_the_clean_result(model, clean_data, clean, tmp_path):
    first = _score(model, clean_data, cache_dir=tmp_path / "c")
    second = _score(model, clean_data, cache_dir=tmp_path / "c")
    assert second.provenance.get("from_result_cache") is True
    _same(first.to_frame(), clean)
    _same(second.to_frame(), clean)


@pytest.mark.parametrize("victim", ["act", "outcome", "cav"])
def test_damaged_entry_is_reported_once_and_recomputed(model, clean_data, clean, tmp_path, victim):
    cache = tmp_path / "c"
    _score(model, clean_data, cache_dir=cache)
    store = Store(cache)
    kinds = _entries_by_kind(store)
    entry = kinds[victim][0]
    if victim != "outcome":  # without the whole-result entry the run reads activations and vectors
        shutil.rmtree(kinds["outcome"][0])
    target = entry / ("record.json" if victim == "outcome" else "array.npy")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x55
    target.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _score(model, clean_data, cache_dir=cache)
    damage = [w for w in caught if issubclass(w.category, CacheCorruptionWarning)]
    assert len(damage) == 1 and entry.name in str(damage[0].message)
    _same(again.to_frame(), clean)
    assert store.verify() == []


def test_foreign_entry_is_discarded(model, clean_data, clean, tmp_path):
    cache = tmp_path / "c"
    _score(model, clean_data, cache_dir=cache)
    store = Store(cache)
    outcome = _entries_by_kind(store)["outcome"][0]
    record = json.loads((outcome / "entry.json").read_text(encoding="utf-8"))
    record["format"] = 1
    (outcome / "entry.json").write_text(json.dumps(record))
    with pytest.warns(CacheCorruptionWarning, match="foreign entry"):
        again = _score(model, clean_data, cache_dir=cache)
    _same(again.to_frame(), clean)


def test_a_pickle_in_the_cache_is_never_executed(model, clean_data, clean, tmp_path):
    import io

    cache = tmp_path / "c"
    _score(model, clean_data, cache_dir=cache)
    store = Store(cache)
    outcome = _entries_by_kind(store)["outcome"][0]
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    np.savez(buffer, **{"table/0": np.array([Exploit()], dtype=object)})
    payload = buffer.getvalue()
    (outcome / "arrays.npz").write_bytes(payload)
    record = json.loads((outcome / "entry.json").read_text(encoding="utf-8"))  # a consistent record, as an attacker would write
    import hashlib
    import zlib
    record["files"]["arrays.npz"].update(size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
                                         crc32=zlib.crc32(payload))
    (outcome / "entry.json").write_text(json.dumps(record))
    with pytest.warns(CacheCorruptionWarning, match="unreadable content"):
        again = _score(model, clean_data, cache_dir=cache)
    assert not marker.exists()
    _same(again.to_frame(), clean)


# ------------------------------------------------------------------------------------------ processes
def _write_forever(directory: str, value: float) -> None:
    store = Store(directory)
    i = 0
    while True:
        store.put(Store.make_key("kill", str(i % 5)), np.full(300_000, value, np.float32), {"writer": value})
        i += 1


def test_sigkill_mid_write_leaves_no_damaged_entry_visible(tmp_path):
    ctx = mp.get_context("spawn")
    for round_ in range(3):
        proc = ctx.Process(target=_write_forever, args=(str(tmp_path), float(round_)))
        proc.start()
        deadline = time.time() + 60
        while not list(Store(tmp_path).entries()) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.05 * (round_ + 1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    store = Store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        for entry in store.entries():
            array = store.get(entry.name)
            meta = json.loads((entry / "entry.json").read_text(encoding="utf-8"))["meta"]
            assert array is not None and np.all(array == meta["writer"])
    assert store.verify() == []
    store.clear()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # leftover temporary folders cleared too


_KILLED_RUN = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import concepts
from synthetic import build_model
concepts.score(build_model(), "conv1", {concept!r}, cache_dir={cache!r}, n_random=4, n_directions=50, progress=False)
"""


def test_run_killed_with_sigkill_restarts_to_the_clean_result(model, clean_data, clean, tmp_path):
    cache = tmp_path / "c"
    script = _KILLED_RUN.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                concept=str(clean_data / "concepts" / "horizontal"), cache=str(cache))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        # Kill it as soon as it has started writing the store: mid-run, with some entries done.
        while proc.poll() is None and time.time() < deadline:
            if cache.is_dir() and any(cache.glob("*/*")):
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Store(cache).verify() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        _same(_score(model, clean_data, cache_dir=cache).to_frame(), clean)


def test_radiomics_workers_are_not_forked():
    from concepts.measures import _executor

    import tensorflow  # noqa: F401  - the parent has TensorFlow loaded, as in `concepts report --measures`

    pool = _executor(2)
    assert type(pool).__module__.startswith("joblib.externals.loky")
    # A forked worker would inherit the parent's modules, TensorFlow's threads and locks included.
    assert pool.submit(lambda: "tensorflow" in sys.modules).result(timeout=120) is False


# ------------------------------------------------------------------------------------------ security
def test_html_escapes_a_hostile_concept_name(model, data, tmp_path):
    hostile = data / "concepts" / "<img src=x onerror=alert(1)>"
    shutil.copytree(data / "concepts" / "horizontal", hostile)
    rep = concepts.report(model, ["conv1"], concepts=[hostile], data=data, cache_dir=False, **FAST)
    html = rep.save(tmp_path / "report")["html"].read_text(encoding="utf-8")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_manifest_pointing_outside_its_folder_is_refused(clean_data, tmp_path):
    from concepts.manifests import ManifestError, check_manifest, write_manifest

    path = write_manifest(clean_data, tmp_path / "m.json")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "size": 1, "set": "."})
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"'\.\./\.\./etc/passwd' \(a '\.\.' component\)"):
        check_manifest(path, clean_data)


def test_yaml_parameters_cannot_run_code(tmp_path):
    from concepts.errors import MeasureError

    marker = tmp_path / "executed"
    params = tmp_path / "params.yaml"
    params.write_text(f'setting: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises((MeasureError, ToolkitError, ValueError)):
        concepts.measure_table(tmp_path, params=params, progress=False)
    assert not marker.exists()


def test_cache_folder_is_private(model, clean_data, tmp_path):
    _score(model, clean_data, cache_dir=tmp_path / "private" / "cache")
    assert (tmp_path / "private" / "cache").stat().st_mode & 0o777 == 0o700
