"""The notebooks in ``notebooks/`` run top to bottom, with small settings, in a kernel of this Python.

Each notebook is stored without outputs and has a cell tagged ``parameters``; the test inserts a cell
after it that overrides the settings (small demo case, few random runs, a temporary output folder),
executes every cell with nbclient, and fails with the failing cell's error.

The kernel is a kernelspec written into a temporary Jupyter data folder (put first on
``JUPYTER_PATH``) that launches ``sys.executable``, so the notebooks run in the interpreter that runs
the tests (the fresh venv in CI), whatever kernelspecs the machine has installed elsewhere.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_radiomics_concepts.ipynb", "03_global_report.ipynb",
             "04_maps_and_examples.ipynb"]
KERNEL_NAME = "concepts-test-python"
CELL_TIMEOUT = 300  # seconds per cell


def _load(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _plain(text: str) -> str:
    """The text without ANSI colour codes (IPython colours its tracebacks)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _parameters_index(nb) -> int:
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


@pytest.fixture(scope="module")
def jupyter_dir(tmp_path_factory) -> Path:
    """A Jupyter data folder whose only kernelspec launches ``sys.executable -m ipykernel_launcher``."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(path=str(root / "kernels" / KERNEL_NAME))
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the three notebooks: the demo CNN is trained once, by the first notebook."""
    return tmp_path_factory.mktemp("concepts-cache")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean(name):
    nb = _load(name)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown", "the first cell should say what the notebook answers"
    index = _parameters_index(nb)
    assert nb.cells[index].cell_type == "code"
    for knob in ("SIZE", "N_RANDOM", "OUT", "PROGRESS"):  # what test_notebook_runs overrides
        assert re.search(rf"^{knob} = ", nb.cells[index].source, re.M), f"the parameters cell lacks {knob}"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"cell {i} has stored outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count; clear outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, jupyter_dir, cache_dir, monkeypatch):
    nb = _load(name)
    index = _parameters_index(nb)
    override = nbformat.v4.new_code_cell(
        f'SIZE = "small"\nN_RANDOM = 4\nOUT = {str(tmp_path)!r}\nPROGRESS = False',
        metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, override)

    # The kernelspec is found through JUPYTER_PATH; the kernel inherits this environment.
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter_dir),
                                                                      os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(cache_dir))
    # The kernel runs in a temporary folder: put this checkout first so that it imports the code under
    # test, not whatever copy of the package the interpreter has installed (e.g. another worktree).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOK_DIR.parent),
                                                                      os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebooks choose the inline backend
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert Path(spec.argv[0]) == Path(sys.executable), spec.argv
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT, allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        failure = f"{name}: a cell failed\n{_plain(str(exc))}"
    except nbclient.exceptions.CellTimeoutError as exc:
        failure = f"{name}: a cell ran longer than {CELL_TIMEOUT} s\n{_plain(str(exc))}"
    if failure is not None:  # outside the except block, so that only the cell's error is shown
        pytest.fail(failure, pytrace=False)

    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.get("output_type") == "error"]
    assert not errors, errors
    if name == "03_global_report.ipynb":
        assert (tmp_path / "report" / "report.html").is_file()
    assert os.listdir(tmp_path), "the notebook wrote nothing under OUT"
