"""Tests of concepts.manifests: write, check, and the errors for bad manifests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from concepts.manifests import (ManifestCheck, ManifestError, check_manifest, read_manifest, set_of,
                                sha256_file, write_manifest)
from concepts.errors import ConceptFolderError, ToolkitError


def _data(root: Path) -> Path:
    files = {
        "classes/benign/001.png": b"b1",
        "classes/benign/003.png": b"b3",
        "classes/malignant/001.png": b"m1",
        "concepts/striped/a.png": b"s",
        "random/set_03/r.png": b"r",
        "masks/classes/benign/001.png": b"mask",
        "classes.txt": b"benign\nmalignant\n",
        "other/deep/x.tif": b"x",
        ".DS_Store": b"junk",
        ".ipynb_checkpoints/y.png": b"junk",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)  # more than one chunk
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_set_of():
    assert set_of("classes/benign/003.png") == "classes/benign"
    assert set_of("random/set_03/a/b.png") == "random/set_03"
    assert set_of("masks/classes/benign/1.png") == "masks/classes"
    assert set_of("random/pool.png") == "random"
    assert set_of("classes.txt") == "."
    assert set_of("tiles/a/b/x.png") == "tiles/a/b"


def test_write_then_check_ok(tmp_path, monkeypatch):
    data = _data(tmp_path / "mydata")
    monkeypatch.chdir(tmp_path)
    out = write_manifest("mydata", preprocessing="default_preprocess/v1", provenance={"source": "test"})
    assert out == Path("data_manifests") / "mydata.json"
    manifest = json.loads(out.read_text(encoding="utf-8"))
    assert manifest["name"] == "mydata" and manifest["root"] == "mydata" and manifest["format_version"] == 1
    assert manifest["preprocessing"] == "default_preprocess/v1"
    assert manifest["provenance"] == {"source": "test"}
    paths = [f["path"] for f in manifest["files"]]
    assert paths == sorted(paths) and manifest["n_files"] == 8
    assert ".DS_Store" not in paths and not any(".ipynb" in p for p in paths)
    entry = {f["path"]: f for f in manifest["files"]}["classes/benign/003.png"]
    assert entry == {"path": "classes/benign/003.png", "sha256": hashlib.sha256(b"b3").hexdigest(),
                     "size": 2, "set": "classes/benign"}
    assert manifest["created"].endswith("+00:00")
    result = check_manifest(out)  # root resolved against the working directory
    assert isinstance(result, ManifestCheck) and result.ok and result.n_checked == 8
    assert "OK" in str(result)
    assert read_manifest(out)["n_files"] == 8
    # Deterministic apart from "created".
    again = json.loads(write_manifest(data, tmp_path / "again.json", name="mydata").read_text(encoding="utf-8"))
    manifest.pop("created"), again.pop("created"), again.pop("root"), manifest.pop("root")
    assert manifest["files"] == again["files"]


def test_changed_missing_added(tmp_path):
    data = _data(tmp_path / "d")
    out = write_manifest(data, tmp_path / "m.json")
    (data / "classes/benign/003.png").write_bytes(b"B3")  # same size, different bytes
    (data / "concepts/striped/a.png").write_bytes(b"longer")
    (data / "random/set_03/r.png").unlink()
    (data / "classes/benign/new.png").write_bytes(b"n")
    result = check_manifest(out)
    assert not result.ok
    assert result.changed == ["classes/benign/003.png", "concepts/striped/a.png"]
    assert result.missing == ["random/set_03/r.png"]
    assert result.added == ["classes/benign/new.png"]
    assert result.n_checked == 7
    text = str(result)
    assert "changed: classes/benign/003.png (sha256 differs)" in text
    assert "changed: concepts/striped/a.png (size" in text
    assert "missing: random/set_03/r.png" in text
    assert "added: classes/benign/new.png" in text


def test_manifest_inside_data_dir_and_other_dir(tmp_path):
    data = _data(tmp_path / "d")
    out = write_manifest(data, data / "manifest.json")
    assert "manifest.json" not in [f["path"] for f in read_manifest(out)["files"]]
    assert check_manifest(out).ok
    moved = tmp_path / "moved"
    data.rename(moved)
    with pytest.raises(ManifestError, match="data_dir="):
        check_manifest(moved / "manifest.json")
    assert check_manifest(moved / "manifest.json", moved).ok


def test_bad_manifests(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        check_manifest(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        check_manifest(bad)
    bad.write_text(json.dumps({"files": [{"path": "a"}]}))
    with pytest.raises(ManifestError, match="'files'"):
        check_manifest(bad)
    assert issubclass(ManifestError, ToolkitError)
    with pytest.raises(ConceptFolderError, match="does not exist"):
        write_manifest(tmp_path / "missing", tmp_path / "m.json")
    (tmp_path / "d").mkdir()
    with pytest.raises(ManifestError, match="JSON-serialisable"):
        write_manifest(tmp_path / "d", tmp_path / "m.json", provenance={"x": object()})
    assert not (tmp_path / "m.json").exists()
