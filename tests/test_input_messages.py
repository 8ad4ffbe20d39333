"""Errors that name the right culprit: a preprocess function that returns nothing or text, a broken
symlink in a concept folder, a random pool that is simply too small."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.errors import ImageReadError, InputShapeError  # noqa: E402
from probes.errors import InsufficientDataError  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("messages") / "d", n_class=6, n_concept=10, n_pool=40)


@pytest.mark.parametrize("returned, shown", [(None, "returned NoneType None"), ("abc", "returned str 'abc'")])
def test_a_preprocess_returning_no_array_is_named_not_the_file(data, returned, shown):
    def broken(image, shape):
        return returned

    with pytest.raises(InputShapeError, match=f"Preprocessing .*broken {shown} for image .*must return a numeric"):
        concepts.score(build_model(), "conv1", data / "concepts" / "horizontal", data=data, preprocess=broken, **FAST)


def test_a_broken_symlink_in_a_concept_folder_is_named(data, tmp_path):
    folder = tmp_path / "linked"
    folder.mkdir()
    for f in sorted((data / "concepts" / "horizontal").glob("*.png")):
        (folder / f.name).symlink_to(f)
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match=r"gone\.png: does not exist"):
        concepts.score(build_model(), "conv1", folder, data=data, **FAST)
    with pytest.warns(UserWarning, match=r"(?s)Leaving out 1 image file.*gone\.png"):
        result = concepts.score(build_model(), "conv1", folder, data=data, on_error="skip", **FAST)
    assert [s["path"] for s in result.provenance["skipped_images"]] == [str(folder / "gone.png")]


def test_a_small_random_pool_does_not_claim_files_were_left_out(data, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for f in sorted((data / "random").glob("*.png"))[:3]:
        (pool / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InsufficientDataError) as info:
        concepts.score(build_model(), "conv1", data / "concepts" / "horizontal", data=data, random=pool, **FAST)
    assert "has 3 images, fewer than the set size 10" in str(info.value) and "leaving out" not in str(info.value)
