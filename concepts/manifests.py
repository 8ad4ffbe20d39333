"""Data manifests: every file of a data folder with its SHA-256, size and set, verifiable later.

A manifest is an integrity record of the images (and any other files, such as ``classes.txt``)
that a result was computed from. Write one when a data folder is built or downloaded, commit it
(the project keeps them in ``data_manifests/``), and check it before a run or a review: a changed,
vanished or new file is named, so nobody silently explains a model with different data.

The JSON is deterministic apart from ``created``: keys and files are sorted, so that ``git diff``
of two manifests shows exactly which files changed.

Examples
--------
>>> path = write_manifest("data", provenance={"source": "demo"})
>>> print(check_manifest(path))
Manifest data_manifests/data.json vs 'data': OK, all 133 files match.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from probes.identity import sha256_file as _sha256_file

from .errors import ConceptFolderError, ToolkitError

FORMAT_VERSION = 1

# Top-level folders of the data folder convention; a file below one of them belongs to the set named
# by the first two path components ("concepts/striped", "random/set_03", ...).
CONVENTION_FOLDERS = ("classes", "concepts", "random", "masks")

_CHUNK = 1 << 20


class ManifestError(ToolkitError, ValueError):
    """A manifest file that is missing, is not valid JSON or lacks required fields."""


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks (memory stays flat for big files).

    The one implementation lives in :func:`probes.identity.sha256_file`; this name is kept for
    callers of the manifest API.

    Examples
    --------
    >>> sha256_file("data/classes.txt")  # the two lines "striped" and "other"
    '70e11c1222ada075bd0abf6a3cb65882252cfaacdcd5a2b80aae9a9f4112717a'
    """
    return _sha256_file(path)


def _unsafe_reason(rel: str) -> str | None:
    """Why a manifest path could reach outside its data folder (None when it cannot)."""
    if not rel or "\x00" in rel:
        return "an empty path or a NUL byte"
    posix = Path(rel)
    if posix.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return "an absolute path"
    if ".." in rel.replace("\\", "/").split("/"):
        return "a '..' component"
    return None


def set_of(relative_path: str | Path) -> str:
    """The set a file belongs to, from its path relative to the data folder.

    Files under ``classes/``, ``concepts/``, ``random/`` or ``masks/`` with at least one folder in
    between belong to the first two path components; any other file to its parent folder
    (``"."`` for files at the top, such as ``classes.txt``).

    Examples
    --------
    >>> set_of("concepts/striped/001.png"), set_of("classes.txt"), set_of("tiles/a/b/x.png")
    ('concepts/striped', '.', 'tiles/a/b')
    """
    rel = Path(relative_path)
    parts = rel.parts
    if len(parts) >= 3 and parts[0] in CONVENTION_FOLDERS:
        return "/".join(parts[:2])
    return rel.parent.as_posix()


def _walk(data_dir: Path, skip: Path | None = None) -> Iterator[tuple[str, Path]]:
    """Yield (relative posix path, path) of every regular, non-hidden file below ``data_dir``, sorted.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``, ...) are left out because
    operating systems and editors create and delete them at will; they are not data.
    """
    entries = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        # Followed links can lead back to a folder already walked (a symlink loop): walk each once.
        try:
            stat = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file_name in files:
            if file_name.startswith("."):
                continue
            path = Path(root) / file_name
            if not path.is_file():  # broken links, sockets, ...
                continue
            if skip is not None and path.resolve() == skip:
                continue
            entries.append((path.relative_to(data_dir).as_posix(), path))
    yield from sorted(entries)


def write_manifest(data_dir: str | Path, out: str | Path | None = None, *, name: str | None = None,
                   preprocessing: str | dict | None = None, provenance: dict | None = None) -> Path:
    """Record every file below ``data_dir`` with its SHA-256, size and set in a JSON manifest.

    Parameters
    ----------
    data_dir : str | Path
        The data folder (``classes/``, ``concepts/``, ``random/``, ``masks/``, ...).
        Every regular, non-hidden file is recorded, images or not.
    out : str | Path | None, default=None
        Where to write; default ``data_manifests/<name>.json`` relative to the current
        working directory. Parent folders are created.
    name : str | None, default=None
        The manifest's name; default the data folder's name.
    preprocessing : str | dict | None, default=None
        How images are turned into model inputs (a string such as
        ``"default_preprocess/v1"`` or a dict of settings), stored as given.
    provenance : dict | None, default=None
        Free-form facts about where the data came from (source package, version,
        tiling rule, ...), stored as given; must be JSON-serialisable.

    Returns
    -------
    Path
        The path of the manifest written.

    Raises
    ------
    ConceptFolderError
        ``data_dir`` is missing or not a folder.

    Notes
    -----
    The JSON holds ``format_version``, ``name``, ``created`` (UTC), ``root`` (``data_dir`` as
    given), ``preprocessing``, ``provenance``, ``n_files`` and ``files`` (sorted by path, each with
    ``path``, ``sha256``, ``size`` and ``set``). When the folder holds volumes (NIfTI files, DICOM
    series folders), ``volumes`` maps each one's relative path to its geometry (``size``,
    ``spacing`` in mm, ``origin``, ``direction``; ITK's x, y, z order).

    Examples
    --------
    >>> write_manifest("data", name="demo", provenance={"source": "concepts.demo"})
    PosixPath('data_manifests/demo.json')
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConceptFolderError(f"Cannot write a manifest: data folder {str(folder)!r} {what}. "
                                 "Pass the folder that holds classes/, concepts/ and random/.")
    if name is None:
        name = folder.resolve().name or "data"
    out_path = Path(out) if out is not None else Path("data_manifests") / f"{name}.json"
    # A manifest written inside the folder it describes must not record itself.
    skip = out_path.resolve()
    files = [{"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size, "set": set_of(rel)}
             for rel, path in _walk(folder, skip)]
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "root": str(data_dir),
        "preprocessing": preprocessing,
        "provenance": dict(provenance or {}),
        "n_files": len(files),
        "files": files,
    }
    # Volumes (NIfTI, DICOM series) also record their geometry; 2D-only manifests are unchanged.
    from .volumes import geometry_records

    volumes = geometry_records(folder, [f["path"] for f in files])
    if volumes:
        manifest["volumes"] = volumes
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    except TypeError as exc:
        raise ManifestError(f"Cannot write manifest {name!r}: provenance or preprocessing is not "
                            f"JSON-serialisable ({exc}). Pass strings, numbers, lists and dicts.") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so that an interrupted run never leaves half a manifest.
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def read_manifest(manifest: str | Path) -> dict:
    """Load and validate a manifest written by :func:`write_manifest`.

    Raises
    ------
    ManifestError
        The file is missing, not JSON, or lacks ``files`` entries with
        ``path`` and ``sha256``.

    Examples
    --------
    >>> path = write_manifest("data", name="demo")
    >>> manifest = read_manifest(path)
    >>> manifest["n_files"], manifest["files"][0]["path"], manifest["files"][0]["set"]
    (133, 'classes.txt', '.')
    """
    path = Path(manifest)
    if not path.is_file():
        what = "is a folder, not a file" if path.exists() else "does not exist"
        raise ManifestError(f"Manifest {str(path)!r} {what}. "
                            "Write one with write_manifest(data_dir) or fix the path.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"Manifest {str(path)!r} is not valid JSON ({exc}). "
                            "Restore it from version control or write it again.") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
            for f in files):
        raise ManifestError(f"Manifest {str(path)!r} has no valid 'files' list (each entry needs 'path' "
                            "and 'sha256'); it was not written by write_manifest or was edited by hand.")
    # A manifest is data from elsewhere: it may only name files inside the folder it describes.
    unsafe = [(f["path"], why) for f in files if (why := _unsafe_reason(f["path"])) is not None]
    if unsafe:
        shown = "; ".join(f"{rel!r} ({why})" for rel, why in unsafe[:5])
        raise ManifestError(f"Manifest {str(path)!r} names {len(unsafe)} path(s) outside its data folder: {shown}. "
                            "Manifest paths must be relative to the data folder, without '..'; refusing to use it.")
    return data


@dataclass
class ManifestCheck:
    """Outcome of :func:`check_manifest`: which files changed, vanished or appeared.

    Attributes
    ----------
    changed : list[str]
        Manifest paths whose bytes differ now (``reasons`` says how).
    missing : list[str]
        Manifest paths no longer on disk.
    added : list[str]
        Files on disk that the manifest does not list.
    n_checked : int
        Number of manifest files found on disk and compared.
    reasons : dict[str, str]
        How each changed file differs (size, or SHA-256 when the size is the same).
    manifest : str
        The manifest checked.
    data_dir : str
        The data folder checked.

    Examples
    --------
    >>> result = check_manifest(write_manifest("data", name="demo"))
    >>> result.ok, result.changed, result.n_checked
    (True, [], 133)
    """

    changed: list[str]
    missing: list[str]
    added: list[str]
    n_checked: int
    reasons: dict[str, str] = field(default_factory=dict)
    manifest: str = ""
    data_dir: str = ""

    @property
    def ok(self) -> bool:
        """True when every manifest file is present and unchanged and no file was added."""
        return not (self.changed or self.missing or self.added)

    def __str__(self) -> str:
        head = f"Manifest {self.manifest} vs {self.data_dir!r}"
        if self.ok:
            return f"{head}: OK, all {self.n_checked} files match."
        counts = f"{len(self.changed)} changed, {len(self.missing)} missing, {len(self.added)} added"
        lines = [f"{head}: {counts} ({self.n_checked} present files compared)."]
        lines += [f"  changed: {p} ({self.reasons.get(p, 'content differs')})" for p in self.changed]
        lines += [f"  missing: {p} (in the manifest, not on disk)" for p in self.missing]
        lines += [f"  added: {p} (on disk, not in the manifest)" for p in self.added]
        return "\n".join(lines)


def check_manifest(manifest: str | Path, data_dir: str | Path | None = None) -> ManifestCheck:
    """Compare a data folder with its manifest, file by file (size, then SHA-256).

    Parameters
    ----------
    manifest : str | Path
        The manifest JSON.
    data_dir : str | Path | None, default=None
        The folder to check; default the manifest's ``root`` (a relative root is taken
        relative to the current working directory).

    Raises
    ------
    ManifestError
        The manifest is missing or invalid, or the data folder does not exist.

    Examples
    --------
    A copy of the data folder, one of whose images is then edited in place:

    >>> import shutil
    >>> _ = shutil.copytree("data", "copy")
    >>> path = write_manifest("copy", name="demo")
    >>> with open("copy/classes/striped/s003.png", "r+b") as image:
    ...     _ = image.seek(-20, 2)
    ...     _ = image.write(bytes(4))
    >>> result = check_manifest(path)
    >>> print(result)
    Manifest data_manifests/demo.json vs 'copy': 1 changed, 0 missing, 0 added (133 present files compared).
      changed: classes/striped/s003.png (sha256 differs)
    >>> result.ok
    False
    """
    data = read_manifest(manifest)
    folder = Path(data_dir) if data_dir is not None else Path(str(data.get("root", "")))
    if not folder.is_dir():
        raise ManifestError(f"Data folder {str(folder)!r} of manifest {str(manifest)!r} does not exist. "
                            "Pass data_dir= with the folder's current location.")
    on_disk = dict(_walk(folder, Path(manifest).resolve()))
    recorded = {entry["path"]: entry for entry in data["files"]}
    changed: list[str] = []
    missing: list[str] = []
    reasons: dict[str, str] = {}
    n_checked = 0
    for rel in sorted(recorded):
        path = on_disk.get(rel)
        if path is None:
            missing.append(rel)
            continue
        n_checked += 1
        entry = recorded[rel]
        size = entry.get("size")
        # The size check is free and avoids hashing a file already known to differ.
        if isinstance(size, int) and path.stat().st_size != size:
            changed.append(rel)
            reasons[rel] = f"size {path.stat().st_size} bytes, manifest says {size}"
        elif sha256_file(path) != entry["sha256"]:
            changed.append(rel)
            reasons[rel] = "sha256 differs"
    added = sorted(set(on_disk) - set(recorded))
    return ManifestCheck(changed=changed, missing=missing, added=added, n_checked=n_checked,
                         reasons=reasons, manifest=str(manifest), data_dir=str(folder))
