"""Doctest fixtures for ``concepts/``: those of ``probes/conftest.py``, plus the user-level objects.

See probes/conftest.py for the names every example may use (``np``, ``pd``, ``model``, ``data/``,
``model.keras``) and tests/test_doctests.py for the rule on ``# doctest: +SKIP``. Here also:

* ``concepts``: the package;
* ``result``: ``concepts.score(model, "conv2", "data/concepts/horizontal")``;
* ``report``: ``concepts.report(model, ["conv1", "conv2"], data="data")``;
* ``nested_model``: the planted model with its convolutions inside a functional ``backbone``
  (``build_model(nested=True)``: the same weights; layer paths ``backbone/conv1``, ``backbone/conv2``);
* ``comparison``: ``concepts.compare({"planted": model, "nested": nested_model}, layers={"planted":
  ["conv1", "conv2"], "nested": ["backbone/conv1", "backbone/conv2"]}, data="data")``;
* ``data3d/``: the 3D synthetic data of ``tests/synthetic3d.py::make_data`` (16³ NIfTI volumes,
  spacing (1, 1, 2) mm: ``classes/layered`` and ``classes/other``, 8 each, ``classes.txt``,
  ``concepts/z_layers`` and ``concepts/x_layers``, 8 each, ``random/`` 30 volumes, and
  ``masks/<class>/``: a central 8³ cube for each class volume), in the working directory when an
  example mentions ``"data3d"``;
* ``model3d``: the planted Conv3D model of ``tests/synthetic3d.py`` (input (16, 16, 16, 1), layers
  ``conv1``, ``conv2``, ``pool``, ``gap``, ``head``).

``nested_model``, ``result``, ``report`` and ``comparison`` are computed once per session, only when
an example that runs uses the name without assigning it. They go through the session's activation
cache, so an example that calls ``concepts.score``, ``concepts.report`` or ``concepts.compare`` with
these arguments (and these model objects) itself costs next to nothing after the first one.
"""
from __future__ import annotations

import os

import pytest

from probes.conftest import (DoctestItem, _doctest_environment, _running_examples,  # noqa: F401
                             doctest_assets, needs)

_SHARED: dict[str, object] = {}


def _result(model):
    import concepts

    return concepts.score(model, "conv2", "data/concepts/horizontal")


def _report(model):
    import concepts

    return concepts.report(model, ["conv1", "conv2"], data="data")


def _nested_model(model):
    import keras
    from synthetic import build_model

    keras.utils.set_random_seed(0)
    return build_model(nested=True)


def _comparison(model):
    import concepts

    # The one nested model object of the session: a rebuilt one would not hit the activation cache.
    nested = _shared("nested_model", _nested_model, model)
    layers = {"planted": ["conv1", "conv2"], "nested": ["backbone/conv1", "backbone/conv2"]}
    return concepts.compare({"planted": model, "nested": nested}, layers=layers, data="data")


def _shared(name, build, model):
    if name not in _SHARED:
        _SHARED[name] = build(model)
    return _SHARED[name]


def _data3d(root):
    folder = root / "data3d"
    if not folder.is_dir():
        import numpy as np
        from synthetic3d import make_data

        from concepts.volumes import write_volume

        make_data(folder, n_class=8, n_concept=8, n_pool=30)
        cube = np.zeros((16, 16, 16), np.uint8)
        cube[4:12, 4:12, 4:12] = 1
        for volume in sorted((folder / "classes").glob("*/*.nii.gz")):
            mask = folder / "masks" / volume.relative_to(folder / "classes")
            mask.parent.mkdir(parents=True, exist_ok=True)
            write_volume(cube, mask, spacing=(1.0, 1.0, 2.0))
    return folder


def _model3d():
    if "model3d" not in _SHARED:
        import keras
        from synthetic3d import build_model

        keras.utils.set_random_seed(0)
        _SHARED["model3d"] = build_model()
    return _SHARED["model3d"]


@pytest.fixture(autouse=True)
def _concepts_namespace(request, doctest_namespace, doctest_assets, _doctest_environment, tmp_path):
    import concepts

    doctest_namespace.setdefault("concepts", concepts)
    if not isinstance(request.node, DoctestItem):
        return
    sources = _running_examples(request.node)
    if any("data3d" in source for source in sources):
        os.symlink(_data3d(doctest_assets.root), tmp_path / "data3d", target_is_directory=True)
    if needs("model3d", sources):
        doctest_namespace["model3d"] = _model3d()
    for name, build in (("nested_model", _nested_model), ("result", _result), ("report", _report),
                        ("comparison", _comparison)):
        if needs(name, sources):
            doctest_namespace[name] = _shared(name, build, doctest_assets.model)
