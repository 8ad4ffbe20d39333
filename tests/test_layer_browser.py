"""``concepts.layers`` and ``concepts layers``: every layer, its shape, probe-ability and the suggestions."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

import concepts  # noqa: E402
from concepts.cli import main  # noqa: E402
from probes.engine import Engine  # noqa: E402


def _nested_residual():
    """A flexible residual backbone in a fixed two-output wrapper, with a shared layer off the path.

    backbone: stem -> (b1 -> b2) + stem = block1_add -> pool -> c1.  Wrapper: backbone -> gap ->
    head (softmax, output 0); gap -> shared -> shared -> side (output 1).
    """
    inner_in = keras.Input((None, None, 2))
    stem = L.Conv2D(4, 3, padding="same", name="stem")(inner_in)
    branch = L.Conv2D(4, 3, padding="same", name="b2")(L.Conv2D(4, 3, padding="same", name="b1")(stem))
    added = L.Add(name="block1_add")([stem, branch])
    c1 = L.Conv2D(8, 3, padding="same", name="c1")(L.MaxPooling2D(name="pool")(added))
    backbone = keras.Model(inner_in, c1, name="backbone")
    inp = keras.Input((8, 8, 2), name="image")
    gap = L.GlobalAveragePooling2D(name="gap")(backbone(inp))
    shared = L.Dense(8, name="shared")
    side = L.Dense(1, name="side")(shared(shared(gap)))
    return keras.Model(inp, [L.Dense(3, activation="softmax", name="head")(gap), side], name="wrapper")


@pytest.fixture(scope="module")
def nested():
    return _nested_residual()


@pytest.fixture(scope="module")
def table(nested):
    return concepts.layers(nested)


def _row(table, path):
    rows = table[table["path"] == path]
    assert len(rows) == 1, path
    return rows.iloc[0]


def test_every_layer_with_paths_classes_and_resolved_shapes(table):
    assert list(table.columns) == ["path", "class", "output_shape", "width", "probeable", "why_not", "suggested",
                                   "stage_end", "depth"]
    for path in ("image", "backbone", "backbone/stem", "backbone/b1", "backbone/block1_add", "backbone/c1", "gap",
                 "head", "shared", "side"):
        _row(table, path)
    # The backbone is flexible; its inner shapes come from the wrapper's fixed 8x8 input.
    assert _row(table, "backbone/stem")["output_shape"] == "(8, 8, 4)"
    assert _row(table, "backbone/c1")["output_shape"] == "(4, 4, 8)" and _row(table, "backbone/c1")["width"] == 128
    assert _row(table, "backbone/pool")["class"] == "MaxPooling2D" and _row(table, "backbone/pool")["depth"] == 1
    assert _row(table, "gap")["width"] == 8


def test_probeable_and_why_not(table, nested):
    assert "runs 2 times" in _row(table, "shared")["why_not"] and not _row(table, "shared")["probeable"]
    assert "does not lead to the explained output" in _row(table, "side")["why_not"]
    probeable = table[table["probeable"]]["path"].tolist()
    assert {"backbone/stem", "backbone/b1", "backbone/c1", "gap", "head"} <= set(probeable)
    # Whatever the table calls probeable, the engine accepts.
    Engine(nested, [p for p in probeable if p != "head"], output="head", progress=False)
    side_view = concepts.layers(nested, output="side")
    assert _row(side_view, "head")["why_not"] == "does not lead to the explained output"


def test_suggested_are_block_ends_and_stage_ends_change_resolution(table):
    suggested = table[table["suggested"]]["path"].tolist()
    # stem feeds the branch and the skip; block1_add ends the block by name; c1 is the bottleneck
    # before the head's pooling, which is suggested too. b1, b2 and pool sit inside or between.
    assert suggested == ["backbone/stem", "backbone/block1_add", "backbone/c1", "gap"]
    stage = table[table["stage_end"]]["path"].tolist()
    assert stage == ["backbone/block1_add", "backbone/c1", "gap"]
    only = concepts.layers(_nested_residual(), suggested_only=True)
    assert only["suggested"].all() and len(only) == 4


def test_plain_cnn_marks_the_layers_before_pooling():
    inp = keras.Input((16, 16, 1))
    x = L.Conv2D(4, 3, name="conv1")(inp)
    x = L.Conv2D(4, 3, name="conv2")(L.MaxPooling2D(name="pool1")(x))
    x = L.Conv2D(4, 3, name="conv3")(x)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten(name="flat")(x)))
    table = concepts.layers(model)
    assert table[table["suggested"]]["path"].tolist() == ["conv1", "conv3", "flat"]


def test_densenet_stage_ends_are_its_dense_block_concats():
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    table = concepts.layers(base)
    assert table[table["stage_end"]]["path"].tolist() == [
        "conv2_block6_concat", "conv3_block12_concat", "conv4_block24_concat", "conv5_block16_concat"]
    assert _row(table, "conv4_block24_concat")["width"] == 2 * 2 * 1024


def test_cli_prints_the_table_of_a_saved_model(nested, tmp_path, capsys):
    path = tmp_path / "nested.keras"
    nested.save(path)
    assert main(["layers", str(path), "--suggested"]) == 0
    out = capsys.readouterr().out
    assert "backbone/block1_add" in out and "stage" in out and "backbone/b1 " not in out
    assert "4 layers; 4 suggested" in out
    assert main(["layers", str(path), "--output", "1"]) == 0
    assert "does not lead to the explained output" in capsys.readouterr().out
    assert main(["layers", str(tmp_path / "missing.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_layer_error_points_to_the_browser(nested):
    from probes.errors import UnknownLayerError

    with pytest.raises(UnknownLayerError, match="Did you mean 'backbone/block1_add'.*concepts.layers"):
        Engine(nested, ["block1_add"], output="head", progress=False)


def test_report_points_to_the_browser():
    from concepts.report_html import _HOW_TO_READ

    assert any("concepts.layers(model)" in text for _, text in _HOW_TO_READ)


def test_efficientnet_suggests_block_ends_not_the_activation_inside_a_squeeze_excite_block():
    # blockNa_activation branches into the squeeze-and-excitation gate and goes on inside its block;
    # the blocks without a residual add end at their projection (block1a_project_bn feeds block2a).
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    table = concepts.layers(base)
    suggested = table[table["suggested"]]["path"].tolist()
    assert not [p for p in suggested if p.endswith("a_activation")]
    assert table[table["stage_end"]]["path"].tolist() == [
        "block1a_project_bn", "block2b_add", "block3b_add", "block5c_add", "block7a_project_bn"]
