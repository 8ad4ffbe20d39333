"""Images in sub-folders of class and concept folders (one per patient): left out with a warning that
counts them, used with recursive=True (``--recursive``)."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.errors import ConceptFolderError  # noqa: E402
from concepts.sets import ImageSet  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=3, n_directions=50, progress=False, cache_dir=False, robustness=False)


def _nest(folder, k, patient="patient01"):
    (folder / patient).mkdir()
    for f in sorted(folder.glob("*.png"))[:k]:
        shutil.move(f, folder / patient / f.name)


def test_images_in_sub_folders_are_counted_in_a_warning_and_used_with_recursive(tmp_path):
    data = make_data(tmp_path / "d", n_class=10, n_concept=12, n_pool=40)
    _nest(data / "classes" / "striped", 4)
    model = build_model()
    concept = data / "concepts" / "horizontal"
    with pytest.warns(UserWarning, match=r"4 image file\(s\) in sub-folders of .*striped.* are not used "
                                         r"\(patient01/s000.png, .*6 image\(s\) directly in it"):
        table = concepts.score(model, "conv1", concept, **FAST).to_frame().set_index("class")
    assert table.loc["striped", "n_examples"] == 6
    table = concepts.score(model, "conv1", concept, recursive=True, **FAST).to_frame().set_index("class")
    assert table.loc["striped", "n_examples"] == 10
    assert concepts.Config(recursive=True).recursive and not concepts.Config().recursive


def test_a_folder_with_images_in_sub_folders_only_points_to_recursive(tmp_path):
    data = make_data(tmp_path / "d", n_class=4, n_concept=12, n_pool=40)
    folder = data / "concepts" / "horizontal"
    _nest(folder, 12)
    with pytest.raises(ConceptFolderError, match="recursive=True"):
        ImageSet.from_folder(folder)
    assert len(ImageSet.from_folder(folder, recursive=True)) == 12


def test_the_command_line_takes_recursive():
    from concepts.cli import _parser, config_from_args

    args = _parser().parse_args(["report", "data", "--model", "m.keras", "--layers", "c1", "--recursive"])
    assert config_from_args(args).recursive
