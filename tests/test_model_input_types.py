"""Model inputs of other types than float32 RGB: an integer (uint8) image input, grey + alpha PNGs.

A deployed model often takes ``uint8`` images and rescales them inside; Keras casts whatever it is fed
to the input's dtype, so the default [0, 1] floats reached it as zeros. The default preprocessing for an
integer input puts the images back on the dtype's range (the file's own pixel values for 8-bit images).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

keras = pytest.importorskip("keras")

import concepts  # noqa: E402
from concepts.preprocess import default_preprocess, integer_input_preprocess  # noqa: E402
from concepts.sets import ImageSet  # noqa: E402
from probes.engine import Engine  # noqa: E402
from synthetic import make_data  # noqa: E402


def _twins():
    """The same convolution behind a uint8 input with Rescaling(1/255), and behind a float32 input."""
    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")
    head = keras.layers.Dense(2, name="head")
    pool = keras.layers.GlobalAveragePooling2D()
    raw = keras.Input((16, 16, 1), dtype="uint8")
    deployed = keras.Model(raw, head(pool(conv(keras.layers.Rescaling(1 / 255, name="scale")(raw)))))
    scaled = keras.Input((16, 16, 1))
    plain = keras.Model(scaled, head(pool(conv(scaled))))
    return deployed, plain


def test_integer_input_preprocess_gives_back_the_files_pixel_values():
    grey = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    out = integer_input_preprocess(grey, (16, 16, 1))
    assert out.dtype == np.float32 and np.array_equal(out[..., 0], grey.astype(np.float32))
    # 16-bit images land on the uint8 range; values never leave it.
    wide = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    assert integer_input_preprocess(wide, (2, 2, 1))[..., 0].tolist() == [[0.0, 255.0], [128.0, 1.0]]
    # A signed input keeps a signed image's own values (int16 CT stored as HU).
    hu = np.array([[-1000, 0], [400, 32767]], dtype=np.int16)
    assert integer_input_preprocess(hu, (2, 2, 1), dtype="int16")[..., 0].tolist() == [[-1000.0, 0.0],
                                                                                      [400.0, 32767.0]]


def test_a_uint8_model_sees_the_images_the_float_twin_sees(tmp_path):
    data = make_data(tmp_path / "data", n_class=8, n_concept=10, n_pool=40)
    deployed, plain = _twins()
    files = ImageSet.from_folder(data / "concepts" / "horizontal").files
    raw = ImageSet(files, preprocess=functools.partial(integer_input_preprocess, dtype="uint8")).bind((16, 16, 1))
    acts = [Engine(m, ["conv1"], progress=False).run(source).activations["conv1"]
            for m, source in ((deployed, raw), (plain, ImageSet(files).bind((16, 16, 1))))]
    np.testing.assert_allclose(acts[0], acts[1], rtol=1e-5, atol=1e-6)
    assert Engine(deployed, ["conv1"], progress=False).input_dtype == "uint8"
    kwargs = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False, data=data)
    a = concepts.score(deployed, "conv1", data / "concepts" / "horizontal", **kwargs).to_frame()
    b = concepts.score(plain, "conv1", data / "concepts" / "horizontal", **kwargs).to_frame()
    # All-zero inputs gave UBS 0 with every derivative exactly zero.
    assert (a["zero_fraction"] == 0).all() and (a["ubs"].abs() > 1).all()
    # Same pixels, same convolution: the same conclusions (seeds follow the model, so not the same bits).
    assert (np.sign(a["ubs"]) == np.sign(b["ubs"])).all() and (a["significant"] == b["significant"]).all()
    maps = concepts.score(deployed, "conv1", data / "concepts" / "horizontal", **kwargs).concept_maps(
        "striped", concept="horizontal", layer="conv1")
    assert np.ptp(maps) > 0


def test_grey_and_alpha_pngs_are_read_as_their_grey_channel(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([grey, np.full_like(grey, 200)], axis=-1), mode="LA").save(path)
    from concepts.image_files import read_image

    image = read_image(path)
    np.testing.assert_array_equal(image, grey)
    for shape in ((12, 12, 3), (12, 12, 1), (12, 12)):
        np.testing.assert_array_equal(default_preprocess(image, shape), default_preprocess(grey, shape))


def test_a_flexible_model_with_images_of_several_sizes_names_them_and_takes_sets_bound_to_one(tmp_path):
    from synthetic import write_png

    data = make_data(tmp_path / "data", n_class=8, n_concept=10, n_pool=30)
    rng = np.random.default_rng(0)
    write_png(data / "concepts" / "horizontal" / "wide.png", rng.random((16, 24)))     # another size
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 1))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features)))
    kwargs = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False)
    concept = data / "concepts" / "horizontal"
    with pytest.raises(Exception, match=r"different sizes after preprocessing: .*16x16x1.*16x24x1 \(e\.g\. "
                                        r"'.*wide\.png'\).*preprocess=lambda"):
        concepts.score(model, "conv1", concept, data=data, **kwargs)
    # Sets bound to one fixed size (resized by the default preprocessing) are taken as they are by a model
    # of flexible size; they were bound again to (None, None, 1) and failed.
    bound = [ImageSet(files).bind((16, 16, 1)) for files in
             (sorted((data / "random").glob("*.png"))[i::3] for i in range(3))]
    write_png(data / "random" / "wide.png", rng.random((20, 12)))
    table = concepts.score(model, "conv1", ImageSet.from_folder(concept).bind((16, 16, 1)), data=data,
                           random=bound, **kwargs).to_frame()
    assert len(table) == 2 and table["ubs"].notna().all()


def test_image_sets_given_to_a_uint8_model_get_its_preprocessing_too(tmp_path):
    data = make_data(tmp_path / "data", n_class=8, n_concept=10, n_pool=40)
    deployed, _ = _twins()
    kwargs = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False, data=data)
    folder = data / "concepts" / "horizontal"
    from_set = concepts.score(deployed, "conv1", ImageSet.from_folder(folder), **kwargs).to_frame()
    from_folder = concepts.score(deployed, "conv1", folder, **kwargs).to_frame()
    numeric = from_folder.select_dtypes("number").columns
    np.testing.assert_allclose(from_set[numeric].to_numpy(float), from_folder[numeric].to_numpy(float))
