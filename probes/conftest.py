"""Doctest fixtures: what the ``>>>`` examples of ``probes/`` (and, re-used, ``concepts/``) may name.

``python -m pytest`` collects the docstring examples of every module (``--doctest-modules`` in
setup.cfg). Each example runs in a fresh empty working directory, so nothing it writes lands in the
repository, with these names already defined:

* ``np``, ``pd``: numpy and pandas;
* ``model``: the planted-concept Keras model of ``tests/synthetic.py`` (16×16×1 input, layers
  ``conv1``, ``conv2``, ``gap``, ``head``; classes ``striped`` = 0 and ``other`` = 1);
* ``data/``: a folder in the working directory holding the synthetic data of
  ``tests/synthetic.py::make_data`` (133 files, 16×16 grey PNGs: ``classes/striped`` and
  ``classes/other``, 12 images each, ``classes.txt``, ``concepts/horizontal`` and
  ``concepts/vertical``, 12 each, ``random/`` a pool of 60 noise images, and ``masks/striped``,
  ``masks/other``: a central 10×10 square region for each class image, for radiomics);
* ``model.keras``: that model saved, in the working directory.

The data folder (0.1 s) is built once per session; the model (it imports TensorFlow) only when an
example that is not skipped uses the name ``model`` or ``"model.keras"``, so modules whose
examples are pure numpy cost nothing extra. Examples must not change ``model`` or ``data/`` in
place (they are shared): copy them first (``shutil.copytree("data", "copy")``).
Examples that cannot run cheaply keep ``# doctest: +SKIP`` after a comment that says why
(``>>> call()  # needs a GPU  # doctest: +SKIP``); see tests/test_doctests.py.
"""
from __future__ import annotations

import ast
import doctest
import os
from pathlib import Path

import pytest

try:
    from pytest import DoctestItem
except ImportError:  # pytest < 8
    from _pytest.doctest import DoctestItem


def needs(name: str, sources: list[str]) -> bool:
    """Whether the example code uses the variable ``name`` before (or without) assigning it."""
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        contexts = {type(node.ctx) for node in ast.walk(tree)
                    if isinstance(node, ast.Name) and node.id == name}
        if ast.Load in contexts and ast.Store not in contexts:
            return True
        if ast.Store in contexts:
            return False
    return False


class DoctestAssets:
    """The model and data folder shared by all doctests of a session, built on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import keras
            from synthetic import build_model

            keras.utils.set_random_seed(0)
            self._model = build_model()
        return self._model

    @property
    def data(self) -> Path:
        folder = self.root / "data"
        if not folder.is_dir():
            from synthetic import make_data

            make_data(folder, n_class=12, n_concept=12, n_pool=60)
            _write_masks(folder)
        return folder

    @property
    def model_file(self) -> Path:
        path = self.root / "model.keras"
        if not path.is_file():
            self.model.save(path)
        return path


def _write_masks(root: Path) -> None:
    """``masks/<class>/<image>.png`` for every class image: the central 10×10 square (255 inside)."""
    import numpy as np
    from PIL import Image

    square = np.zeros((16, 16), np.uint8)
    square[3:13, 3:13] = 255
    for image in sorted((root / "classes").glob("*/*.png")):
        mask = root / "masks" / image.relative_to(root / "classes")
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(square, mode="L").save(mask)


@pytest.fixture(scope="session")
def doctest_assets(tmp_path_factory) -> DoctestAssets:
    return DoctestAssets(tmp_path_factory.mktemp("doctest-assets"))


def _running_examples(item) -> list[str]:
    """The source of each example of a doctest item that is not skipped."""
    return [example.source for example in item.dtest.examples if not example.options.get(doctest.SKIP, False)]


@pytest.fixture(autouse=True)
def _doctest_environment(request, doctest_namespace, doctest_assets, tmp_path, monkeypatch):
    """Doctest items only: fresh working directory, shared cache, and the names the examples use."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    import numpy as np
    import pandas as pd

    doctest_namespace.setdefault("np", np)
    doctest_namespace.setdefault("pd", pd)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(doctest_assets.root / "cache"))
    # That cache is a throwaway folder: skip the fsync of every entry written (durability is tested
    # in tests/, not here), which is most of the cost of a first analysis on a slow disk.
    monkeypatch.setattr("probes.cache_files.FSYNC", False)
    os.symlink(doctest_assets.data, tmp_path / "data", target_is_directory=True)
    sources = _running_examples(request.node)
    if needs("model", sources):
        doctest_namespace["model"] = doctest_assets.model
    if any("model.keras" in source for source in sources):
        os.symlink(doctest_assets.model_file, tmp_path / "model.keras")
    np.random.seed(0)
    yield
