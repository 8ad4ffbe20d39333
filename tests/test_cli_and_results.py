"""Command-line usage errors caught before any compute, and results that pickle and refuse bad ``n``.

* ``--out`` that is a file (or lies below one) fails with exit code 2 before any model is loaded.
* ``concepts cache verify|clear --dir`` on a missing folder says so (verify: exit 2).
* A ``--model`` path that exists but is no Keras model is named as such (not "File not found").
* ``--classes 0`` is an output index unless a class is called ``0``.
* ``ScoreResult`` and ``Report`` pickle (without their model context) and keep their table.
* ``driven_examples`` refuses ``n < 1`` and non-integer ``n``.
"""
from __future__ import annotations

import os
import pickle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.cli import _class_args, main  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=4, progress=False, cache_dir=False)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("cli_results_data"), n_class=8, n_concept=10, n_pool=40)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    model.save(path)
    return path


@pytest.fixture
def no_compute(monkeypatch):
    """Any analysis or model load fails the test: the usage errors must come first."""
    import keras

    import concepts.comparison
    import concepts.measures
    import concepts.reporting

    def computed(*args, **kwargs):
        raise AssertionError("the command started computing before checking its arguments")

    monkeypatch.setattr(concepts.reporting, "report", computed)
    monkeypatch.setattr(concepts.comparison, "compare", computed)
    monkeypatch.setattr(concepts.measures, "measure_table", computed)
    monkeypatch.setattr(keras.models, "load_model", computed)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("concepts: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- --out
@pytest.mark.parametrize("below", [False, True])
def test_report_and_compare_refuse_an_out_that_is_a_file_before_computing(data, model_file, tmp_path, capsys,
                                                                          no_compute, below):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    out = blocker / "sub" if below else blocker
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1", "--out", str(out),
                 "--quiet"])
    assert code == 2
    message = _error(capsys)
    assert "--out" in message and "is a file" in message and "nothing was computed" in message
    code = main(["compare", str(data), "--model", f"a={model_file}", "--model", f"b={model_file}",
                 "--layers", "conv1", "--out", str(out), "--quiet"])
    assert code == 2
    assert "is a file" in _error(capsys)
    assert blocker.read_text() == "keep me"  # nothing lost


def test_measures_refuses_an_out_below_a_file_or_a_folder(data, tmp_path, capsys, no_compute):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    assert main(["measures", str(data / "classes"), "--out", str(blocker / "x.csv"), "--quiet"]) == 2
    assert "which is a file" in _error(capsys)
    assert main(["measures", str(data / "classes"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "is a folder" in _error(capsys)
    assert blocker.read_text() == "keep me"


# --------------------------------------------------------------------------- cache
def test_cache_verify_and_clear_of_a_missing_folder_say_so(tmp_path, capsys):
    missing = tmp_path / "no_such_cache"
    assert main(["cache", "verify", "--dir", str(missing)]) == 2
    message = _error(capsys)
    assert "no cache folder" in message and "nothing to verify" in message and str(missing) in message
    assert main(["cache", "clear", "--dir", str(missing)]) == 0
    assert "nothing to clear" in capsys.readouterr().out
    assert main(["cache", "info", "--dir", str(missing)]) == 0
    assert "does not exist yet" in capsys.readouterr().out
    assert not missing.exists()


def test_cache_verify_of_an_existing_empty_folder_is_intact(tmp_path, capsys):
    assert main(["cache", "verify", "--dir", str(tmp_path)]) == 0
    assert "every entry is intact" in capsys.readouterr().out


# --------------------------------------------------------------------------- model paths
@pytest.mark.parametrize("name", ["bad.keras", "bad.h5"])
def test_a_model_file_that_is_not_a_model_is_named_as_such(data, tmp_path, capsys, no_compute, name):
    bad = tmp_path / name
    bad.write_text("notamodel\n")
    assert main(["report", str(data), "--model", str(bad), "--layers", "conv1", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    message = _error(capsys)
    assert "exists but is not a Keras model file" in message and "zip archive" in message
    assert "not found" not in message.lower()
    assert main(["layers", str(bad)]) == 2
    assert "exists but is not a Keras model file" in _error(capsys)
    assert bad.read_text() == "notamodel\n"


def test_a_model_path_that_is_a_folder_is_named_as_such(data, model_file, tmp_path, capsys, no_compute):
    folder = tmp_path / "adir.keras"
    folder.mkdir()
    assert main(["report", str(data), "--model", str(folder), "--layers", "conv1", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert "is a folder" in _error(capsys)
    assert main(["compare", str(data), "--model", f"a={model_file}", "--model", f"b={folder}", "--layers", "conv1",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "is a folder" in _error(capsys)


# --------------------------------------------------------------------------- --classes
def test_classes_given_as_an_output_index(data, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1", "--concepts", "horizontal",
                 "--classes", "0", "--out", str(out), "--n-random", "4", "--quiet"])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "report.csv")
    assert set(table["class"]) == {"striped"}  # line 0 of classes.txt


def test_digit_class_names_stay_names(tmp_path):
    (tmp_path / "classes" / "2021").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("benign\n7\n")
    assert _class_args(tmp_path, "2021,7,1,benign") == ["2021", "7", 1, "benign"]
    assert _class_args(tmp_path, None) is None


# --------------------------------------------------------------------------- pickling
def test_score_result_and_report_pickle_round_trip(model, data):
    result = concepts.score(model, "conv1", data / "concepts" / "horizontal", classes=["striped"], data=data,
                            **FAST)
    rep = concepts.report(model, ["conv1"], data=data, **FAST)
    for original in (result, rep):
        back = pickle.loads(pickle.dumps(original))
        assert type(back) is type(original)
        pd.testing.assert_frame_equal(back.to_frame(), original.to_frame())
        pd.testing.assert_frame_equal(back.per_example(), original.per_example())
        assert back.provenance == original.provenance
        assert original._context is not None  # the live result keeps its maps
        with pytest.raises(ValueError, match="unpickled.*rescore"):
            back.concept_maps("striped", concept="horizontal", layer="conv1")
    assert pickle.loads(pickle.dumps(rep)).title == rep.title


# --------------------------------------------------------------------------- driven_examples n
@pytest.fixture(scope="module")
def rows():
    frame = pd.DataFrame({"class": "c", "layer": "l", "concept": "k", "drive": np.arange(6.0),
                          "presence": np.zeros(6), "image": [f"{i}.png" for i in range(6)]})
    return frame


@pytest.mark.parametrize("n", [-1, 0, -5])
def test_driven_examples_refuses_n_below_one(rows, n):
    from concepts.per_example import driven_examples

    with pytest.raises(ValueError, match="at least 1"):
        driven_examples(rows, class_name="c", concept="k", layer="l", n=n)


@pytest.mark.parametrize("n", [2.9, 2.0, "3", True])
def test_driven_examples_refuses_non_integer_n(rows, n):
    from concepts.per_example import driven_examples

    with pytest.raises(ValueError, match="whole number"):
        driven_examples(rows, class_name="c", concept="k", layer="l", n=n)


def test_driven_examples_accepts_numpy_integers(rows):
    from concepts.per_example import driven_examples

    got = driven_examples(rows, class_name="c", concept="k", layer="l", n=np.int64(2))
    assert got["drive"].tolist() == [5.0, 4.0]
    assert len(driven_examples(rows, class_name="c", concept="k", layer="l", n=100)) == 6
