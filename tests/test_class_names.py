"""Class names to model outputs: ``class_names=`` is checked as strictly as ``classes.txt``.

Every class gets its own output, or the call is refused with a message naming the offending entries
and the fix: repeated names, several classes on one output, indices that are not integers or lie
outside the model's outputs, and two classes on a one-unit (binary sigmoid) output.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from concepts.errors import ConceptFolderError, ToolkitError, UnknownClassError  # noqa: E402
from concepts.layout import class_index_map, read_class_names, resolve_class  # noqa: E402

FAST = dict(n_random=6, n_directions=200, progress=False)


# --------------------------------------------------------------------------- good inputs give the right map
@pytest.mark.parametrize("class_names, expected", [
    (["a", "b", "c"], {"a": 0, "b": 1, "c": 2}),
    (("c", "a", "b"), {"c": 0, "a": 1, "b": 2}),
    (np.array(["a", "b", "c"]), {"a": 0, "b": 1, "c": 2}),
    ({"a": 2, "b": 0, "c": 1}, {"a": 2, "b": 0, "c": 1}),
    ({"a": np.int64(0), "b": np.int32(1), "c": np.uint8(2)}, {"a": 0, "b": 1, "c": 2}),
    ({"b": 1}, {"b": 1}),                      # a subset of the outputs is fine
    ([0, 1, 2], {"0": 0, "1": 1, "2": 2}),     # integer class folders
])
def test_valid_class_names_give_the_map(class_names, expected):
    mapping = class_index_map(3, class_names=class_names)
    assert mapping == expected
    assert all(type(k) is str and type(v) is int for k, v in mapping.items())


def test_class_names_take_precedence_over_classes_txt(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("x\ny\n", encoding="utf-8")
    assert class_index_map(2, class_names=["y", "x"], classes_txt=txt) == {"y": 0, "x": 1}
    assert class_index_map(2, classes_txt=txt) == {"x": 0, "y": 1}


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbfa\nb\nc\n",                  # UTF-8 with BOM (Notepad, Excel)
    b"a\r\nb\r\nc\r\n",                          # Windows line ends
    b"\xef\xbb\xbfa \r\n\r\n  b\t\r\n# comment\r\nc",  # BOM, CRLF, blanks, a comment
])
def test_classes_txt_with_bom_and_crlf(tmp_path, content):
    txt = tmp_path / "classes.txt"
    txt.write_bytes(content)
    assert read_class_names(txt) == ["a", "b", "c"]
    mapping = class_index_map(3, classes_txt=txt)
    assert mapping == {"a": 0, "b": 1, "c": 2}
    assert resolve_class("a", mapping, 3) == ("a", 0)


def test_classes_txt_not_utf8_is_named(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("benign\nmalignant\n", encoding="utf-16")
    with pytest.raises(ConceptFolderError, match=r"is not UTF-8 text.*Save it as UTF-8"):
        read_class_names(txt)


def test_empty_classes_txt_is_an_error(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("\n# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ConceptFolderError, match=r"names no class.*one per line"):
        class_index_map(2, classes_txt=txt)


def test_repeat_in_classes_txt_names_lines_after_bom(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_bytes(b"\xef\xbb\xbfa\r\nb\r\na\r\n")
    with pytest.raises(ConceptFolderError, match=r"'a' on lines 1, 3"):
        read_class_names(txt)


def test_numpy_integer_class_index_resolves():
    assert resolve_class(np.int64(1), {"a": 0, "b": 1}, 2) == ("b", 1)
    with pytest.raises(UnknownClassError, match=r"outside the model's outputs 0\.\.1"):
        resolve_class(np.int64(2), {"a": 0, "b": 1}, 2)


# ------------------------------------------------------------------- bad class_names are refused by name
def _message(n_outputs, class_names):
    with pytest.raises(UnknownClassError) as info:
        class_index_map(n_outputs, class_names=class_names)
    assert isinstance(info.value, ToolkitError)
    return str(info.value)


def test_repeated_name_in_list_is_named():
    message = _message(4, ["a", "b", "a", "c"])
    assert "'a' at positions 0, 2" in message and "more than once" in message
    assert "points outside" not in message          # not the misleading out-of-range message
    assert "remove the repeats" in message


def test_two_classes_on_one_output_are_refused():
    message = _message(3, {"a": 0, "b": 0, "c": 2})
    assert "'a' and 'b' on output 0" in message
    assert "identical results" in message and "its own output index" in message


@pytest.mark.parametrize("class_names, shown", [
    ({"a": 0.0, "b": 1.9, "c": 2}, "{'a': 0.0, 'b': 1.9}"),     # 1.9 was silently truncated to 1
    ({"a": 0, "b": "1"}, "{'b': '1'}"),                          # a string of digits is not an index
    ({"a": True, "b": 0}, "{'a': True}"),                        # a bool is not an index
    ({"a": 0, "b": None}, "{'b': None}"),
    ({"a": np.float64(1.0)}, "{'a': 1.0}"),
])
def test_non_integer_indices_are_named(class_names, shown):
    message = _message(3, class_names)
    assert "not integers" in message and shown in message
    assert "{'benign': 0, 'malignant': 1}" in message          # how to write it


def test_negative_index_is_outside_the_outputs():
    message = _message(3, {"a": 0, "b": -1})
    assert "points outside the model's 3 outputs: {'b': -1}" in message
    assert "Valid output indices are 0..2" in message and "not counted from the end" in message


def test_index_past_the_outputs_is_named():
    message = _message(3, {"a": 0, "b": np.int64(3)})
    assert "{'b': 3}" in message and "0..2" in message


@pytest.mark.parametrize("class_names, fragment", [
    ("benign", "is a single str, not a list of class names"),   # would become ['b', 'e', 'n', ...]
    ({"a", "b"}, "is a set, which has no order"),
    (3, "neither a list nor a dict"),
    ([], "class_names is empty"),
    ({}, "class_names is empty"),
    (["a", "", "c"], "not class names: ''"),
    (["a", None], "not class names: None"),
    (["a", 1.5], "not class names: 1.5"),
    (["benign", " malignant"], "spaces around them: ' malignant'"),
    ({0: 0, "0": 1}, "same class name when read as text: '0' as 0 and '0'"),
])
def test_malformed_class_names_are_refused(class_names, fragment):
    assert fragment in _message(3, class_names)


def test_shared_index_from_integer_folders_is_refused():
    with pytest.raises(UnknownClassError, match=r"integer folder names.*'0' and '00' on output 0"):
        class_index_map(3, folder_names=["0", "00", "1"])


# ------------------------------------------------------------------- one-unit (binary sigmoid) outputs
@pytest.mark.parametrize("class_names", [["benign", "malignant"], {"benign": 0, "malignant": 0},
                                         {"benign": 0, "malignant": 1}])
def test_two_classes_on_a_one_unit_output_explain_the_fix(class_names):
    message = _message(1, class_names)
    assert "one unit" in message and "scores one class" in message and "logit" in message
    assert "class_names={'malignant': 0}" in message
    assert "classes.txt holding the single line 'malignant'" in message
    assert "classes=['malignant']" in message
    assert "same with the opposite sign" in message and "lowers 'benign'" in message


def test_two_line_classes_txt_on_a_one_unit_output(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("benign\nmalignant\n", encoding="utf-8")
    with pytest.raises(UnknownClassError, match=r"one unit.*class_names=\{'malignant': 0\}.*opposite sign"):
        class_index_map(1, classes_txt=txt, folder_names=["benign", "malignant"])
    txt.write_text("malignant\n", encoding="utf-8")
    assert class_index_map(1, classes_txt=txt) == {"malignant": 0}


def test_three_classes_on_a_one_unit_output_ask_to_check_the_model():
    message = _message(1, ["a", "b", "c"])
    assert "cannot tell 3 classes apart" in message and "output=" in message


def test_unknown_class_on_a_one_unit_output_says_to_score_the_one_class():
    with pytest.raises(UnknownClassError, match=r"Unknown class 'benign'.*one unit.*classes=\['malignant'\]"):
        resolve_class("benign", {"malignant": 0}, 1)


def test_one_unit_model_end_to_end(tmp_path):
    """Through ``concepts.score``: the two-line classes.txt is refused with the fix, and the fix works."""
    import keras

    import concepts
    from synthetic import edge_filters, make_data

    data = make_data(tmp_path / "data", n_class=8, n_concept=8, n_pool=48)
    inputs = keras.Input((16, 16, 1))
    conv1 = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")
    head = keras.layers.Dense(1, activation="sigmoid", name="head")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(conv1(inputs))))
    conv1.set_weights([edge_filters(), np.zeros(4, np.float32)])
    # The logit of 'striped' is horizontal-stripe energy minus vertical-stripe energy.
    head.set_weights([np.array([[4.0], [4.0], [-4.0], [-4.0]], np.float32), np.zeros(1, np.float32)])
    concept = data / "concepts" / "horizontal"

    with pytest.raises(UnknownClassError, match=r"one unit.*class_names=\{'other': 0\}"):
        concepts.score(model, "conv1", concept, cache_dir=False, **FAST)  # classes.txt: striped, other
    with pytest.raises(UnknownClassError, match=r"one unit"):
        concepts.score(model, "conv1", concept, class_names={"striped": 0, "other": 0}, cache_dir=False,
                       **FAST)

    result = concepts.score(model, "conv1", concept, class_names={"striped": 0}, classes=["striped"],
                            cache_dir=False, **FAST)
    table = result.to_frame()
    assert list(table["class"]) == ["striped"] and (table["target"] == "logit").all()
    assert float(table["score"].iloc[0]) > 0.9      # horizontal stripes raise the striped logit
