"""The Keras adapter (probes/keras_graph.py): supported version range and every internal it reads.

Each check runs one adapter function on a tiny functional model with a nested sub-model (and a
Sequential model) and, should a Keras release move or rename an internal, fails with a message
that names probes/keras_graph.py and the internal, so the fix is obvious.
"""
import configparser
import contextlib
from pathlib import Path

import numpy as np
import pytest
from packaging.specifiers import SpecifierSet

keras = pytest.importorskip("keras")

from probes import keras_graph as kg  # noqa: E402

ADAPTER = "probes/keras_graph.py"
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def internal(name: str):
    """Turn any failure inside into one that names the adapter and the internal that moved."""
    assert name in kg.KERAS_INTERNALS or name.startswith("Node."), name
    try:
        yield
    except Exception as exc:  # AttributeError, ImportError, TypeError, a wrong result...
        pytest.fail(f"{ADAPTER}: the Keras internal `{name}` moved or changed in keras {keras.__version__} "
                    f"({type(exc).__name__}: {exc}). Update the adapter function that reads it.", pytrace=False)


@pytest.fixture(scope="module")
def models():
    inner_in = keras.Input((6,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    x = keras.Input((6,), name="image")
    h = keras.layers.Dense(6, name="stem")(x)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    out = keras.layers.Dense(2, name="head")(inner(h))
    outer = keras.Model(x, out, name="outer")
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="seq")
    return outer, inner, seq


def test_installed_keras_is_in_the_supported_range():
    spec = SpecifierSet(",".join(kg.SUPPORTED_KERAS))
    assert keras.__version__ in spec, (f"{ADAPTER} supports keras {spec}; keras {keras.__version__} is "
                                       "installed. Check every internal listed in KERAS_INTERNALS, then widen "
                                       "SUPPORTED_KERAS and setup.cfg together.")
    assert kg.keras_version_supported()
    assert not kg.keras_version_supported("4.0.0") and not kg.keras_version_supported("2.15.0")


def test_supported_range_matches_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    keras_line = next(line for line in requires if line.startswith("keras"))
    assert SpecifierSet(keras_line[len("keras"):]) == SpecifierSet(",".join(kg.SUPPORTED_KERAS)), (
        f"setup.cfg says {keras_line!r} but {ADAPTER} declares SUPPORTED_KERAS = {kg.SUPPORTED_KERAS}")


def test_functional_class_and_sequential_graph(models):
    outer, inner, seq = models
    with internal("keras.src.models.functional.Functional"):
        assert kg.graph_of(outer) is outer and kg.graph_of(inner) is inner
    with internal("Sequential._functional"):
        graph = kg.graph_of(seq)
        assert graph is not None and [op.name for op in kg.graph_operations(graph)][-1] == "d"


def test_nodes_by_depth_and_parents(models):
    outer, inner, _ = models
    with internal("Functional._nodes_by_depth"):
        nodes = kg.nodes_by_operation(outer)
        assert len(nodes[id(outer.get_layer("head"))]) == 1
        assert id(inner) in nodes
    with internal("Node.parent_nodes"):
        (head_node,) = nodes[id(outer.get_layer("head"))]
        assert [op.name for op in kg.parent_operations(head_node)] == ["inner"]


def test_run_through_graph_and_standardize_inputs(models):
    outer, _, _ = models
    x = np.ones((2, 6), "float32")
    with internal("Functional._standardize_inputs"):
        flat = kg.standardize_inputs(outer, x)
        assert len(flat) == 1
    seen = []

    def record(op):
        seen.append(op.name)
        return op

    with internal("Functional._run_through_graph"):
        out = kg.run_through_graph(outer, flat, record)
        out = out[0] if isinstance(out, (list, tuple)) else out
        np.testing.assert_allclose(np.asarray(out), np.asarray(outer(x)), rtol=1e-5)
        assert {"stem", "drop", "inner", "head"} <= set(seen)


def test_keras_history_and_inbound_nodes(models):
    outer, inner, _ = models
    with internal("KerasTensor._keras_history"):
        op, index = kg.tensor_origin(outer.outputs[0])
        assert op.name == "head" and index == 0
        assert kg.input_name(outer.inputs[0]) == "image"
    with internal("Layer._inbound_nodes"):
        stem = outer.get_layer("stem")
        assert kg.is_graph_operation(stem) and not kg.is_graph_operation(object())
        tensor = kg.single_input(stem)
        assert tensor is not None and kg.tensor_origin(tensor)[0].name == "image"
        assert kg.single_input(inner) is not None


def test_call_context_args(models):
    outer, _, _ = models
    with internal("Layer._call_context_args"):
        assert "training" in outer.get_layer("drop")._call_context_args
        assert kg.takes_training_flag(outer.get_layer("drop")) is True
        # Keras 3 lists `training` for every layer (it propagates the flag to nested layers).
        assert isinstance(kg.takes_training_flag(outer.get_layer("stem")), bool)


def test_no_other_module_touches_keras_internals():
    offenders = []
    for folder in ("concepts", "probes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / ADAPTER:
                continue
            text = path.read_text(encoding="utf-8")
            for needle in ("keras.src", "_inbound_nodes", "_keras_history", "_nodes_by_depth", "_run_through_graph",
                           "_standardize_inputs", "_call_context_args", "._functional"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == [], f"Keras internals outside {ADAPTER}: {offenders}"


def test_a_moved_internal_fails_loudly_naming_the_adapter():
    class RenamedGraph:  # what a Keras release without Functional._nodes_by_depth would hand over
        _nodes_by_layer_depth: dict = {}

    with pytest.raises(pytest.fail.Exception, match=r"probes/keras_graph.py: the Keras internal `Functional._nodes_by_depth`"):
        with internal("Functional._nodes_by_depth"):
            kg.nodes_by_operation(RenamedGraph())
