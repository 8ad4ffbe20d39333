"""The ``concepts`` command line, end to end on a tiny saved model and synthetic data."""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from concepts.cli import main  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never write into the user's ~/.cache during tests."""
    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("cli_data"), n_class=12, n_concept=12, n_pool=60)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    build_model().save(path)
    return path


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("concepts: error:")]


# --------------------------------------------------------------------------- report
def test_report_end_to_end_writes_html_csv_and_figures(data, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1,conv2", "--out", str(out),
                 "--n-random", "4", "--quiet"])
    assert code == 0
    assert (out / "report.html").is_file() and (out / "report.csv").is_file()
    pngs = sorted(out.glob("figure_*.png"))
    assert len(pngs) >= 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    table = pd.read_csv(out / "report.csv")
    assert len(table) == 2 * 2 * 2  # classes x layers x concepts (horizontal, vertical)
    assert set(table["layer"]) == {"conv1", "conv2"}
    assert set(table["concept"]) == {"horizontal", "vertical"}
    assert (table["n_random"] == 4).all()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "m.keras" in html and "<table" in html
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert list(provenance["layers"]) == ["conv1", "conv2"]
    printed = capsys.readouterr().out
    assert str((out / "report.html").resolve()) in printed
    assert "significant" in printed


def test_report_selected_concepts_and_classes(data, model_file, tmp_path):
    out = tmp_path / "out"
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1", "--out", str(out),
                 "--concepts", "horizontal", "--classes", "striped", "--n-random", "3", "--quiet"])
    assert code == 0
    table = pd.read_csv(out / "report.csv")
    assert list(table["concept"]) == ["horizontal"] and list(table["class"]) == ["striped"]


def test_bad_layer_name_exits_non_zero_naming_the_valid_layers(data, model_file, tmp_path, capsys):
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1,conv9", "--out",
                 str(tmp_path / "out"), "--n-random", "3", "--quiet"])
    assert code != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "conv9" in lines[0] and "conv1" in lines[0] and "conv2" in lines[0]
    assert not (tmp_path / "out" / "report.html").exists()


def test_missing_data_dir_is_a_one_line_error(model_file, tmp_path, capsys):
    missing = tmp_path / "no_such_data"
    code = main(["report", str(missing), "--model", str(model_file), "--layers", "conv1", "--quiet"])
    assert code != 0
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert len(lines) == 1 and "no_such_data" in lines[0]
    assert "Traceback" not in captured.err


def test_missing_model_file_is_a_one_line_error(data, tmp_path, capsys):
    code = main(["report", str(data), "--model", str(tmp_path / "absent.keras"), "--layers", "conv1", "--quiet"])
    assert code != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "absent.keras" in lines[0]


def test_unreadable_model_file_is_a_one_line_error(data, tmp_path, capsys):
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"not a keras archive")
    code = main(["report", str(data), "--model", str(fake), "--layers", "conv1", "--quiet"])
    assert code != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "fake.keras" in lines[0]


def test_empty_layer_list_is_a_one_line_error(data, model_file, capsys):
    code = main(["report", str(data), "--model", str(model_file), "--layers", " , ", "--quiet"])
    assert code != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--layers" in lines[0]


def test_too_few_random_sets_is_a_one_line_error(data, model_file, tmp_path, capsys):
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1", "--out",
                 str(tmp_path / "out"), "--n-random", "1", "--quiet"])
    assert code != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "n_random" in lines[0]


def test_required_arguments_are_argparse_errors(data, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(data), "--layers", "conv1"])
    assert exc.value.code == 2
    assert "--model" in capsys.readouterr().err


# --------------------------------------------------------------------------- manifest
def test_manifest_write_check_and_detect_a_change(data, tmp_path, capsys):
    manifest = tmp_path / "manifests" / "data.json"
    assert main(["manifest", str(data), "--out", str(manifest)]) == 0
    assert manifest.is_file()
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    assert recorded["n_files"] == len([p for p in data.rglob("*") if p.is_file()])
    capsys.readouterr()

    assert main(["manifest", "--check", str(manifest), str(data)]) == 0
    assert "OK" in capsys.readouterr().out

    changed = data / "concepts" / "horizontal" / "h000.png"
    original = changed.read_bytes()
    try:
        changed.write_bytes(original + b"\0")
        assert main(["manifest", "--check", str(manifest), str(data)]) == 1
        out = capsys.readouterr().out
        assert "concepts/horizontal/h000.png" in out and "changed" in out
    finally:
        changed.write_bytes(original)
    assert main(["manifest", "--check", str(manifest), str(data)]) == 0


def test_manifest_errors_are_one_line(tmp_path, capsys):
    assert main(["manifest"]) != 0
    assert len(_error_lines(capsys.readouterr().err)) == 1
    assert main(["manifest", str(tmp_path / "nowhere")]) != 0
    assert "nowhere" in _error_lines(capsys.readouterr().err)[0]
    assert main(["manifest", "--check", str(tmp_path / "missing.json"), str(tmp_path)]) != 0
    assert "missing.json" in _error_lines(capsys.readouterr().err)[0]


# --------------------------------------------------------------------------- measures
def test_measures_writes_a_csv(data, tmp_path, capsys):
    out = tmp_path / "tables" / "measures.csv"
    code = main(["measures", str(data / "classes"), "--out", str(out), "--jobs", "1", "--quiet"])
    assert code == 0
    table = pd.read_csv(out, index_col="image")
    assert len(table) == 2 * 12
    assert "original_firstorder_Mean" in table.columns and "original_glcm_Contrast" in table.columns
    assert table["original_firstorder_Mean"].notna().all()
    assert str(out) in capsys.readouterr().out


def test_measures_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["measures", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.csv")]) != 0
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "nothing" in lines[0]


# --------------------------------------------------------------------------- help
@pytest.mark.parametrize("command, options", [
    ("report", ["--model", "--layers", "--out", "--n-random", "--measures", "--sanity", "--correction"]),
    ("measures", ["--masks", "--params", "--channel", "--out", "--jobs"]),
    ("manifest", ["--out", "--check", "--name"]),
    ("demo", ["--case", "--out", "--small"]),
])
def test_help_of_every_subcommand(command, options, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text


def test_top_level_help_and_no_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ("report", "measures", "manifest", "demo"):
        assert command in text
    assert main([]) != 0


# --------------------------------------------------------------------------- cache
def test_cache_info_verify_clear(tmp_path, capsys, monkeypatch):
    import numpy as np

    from probes.cache import Store

    store = Store(tmp_path / "cache")
    keys = [Store.make_key("cli", str(i)) for i in range(3)]
    for key in keys:
        store.put(key, np.arange(100.0), {"kind": "act"})
    damaged = store.entry_path(keys[1]) / "array.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"XXXXXXXX")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cache") in out and "entries: 3" in out and "act:" in out
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert keys[1] in out and "1 damaged entry removed" in out
    assert main(["cache", "verify"]) == 0
    assert "every entry is intact" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(tmp_path / "cache")]) == 0
    assert "2 entries removed" in capsys.readouterr().out
    assert list(store.entries()) == []
    monkeypatch.setenv("CONCEPTS_CACHE_MAX", "lots")
    assert main(["cache", "info"]) == 2
    assert "CONCEPTS_CACHE_MAX='lots'" in capsys.readouterr().err
