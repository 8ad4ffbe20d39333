"""The per-image radiomics cache: keys of image bytes, mask bytes, parameters, channel and versions.

Entries live in the toolkit's store (:class:`probes.cache.Store`) at the one cache folder rule,
:func:`probes.cache.default_cache_dir`; files are identified by :func:`probes.identity.file_sha256`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from probes.cache import Store, default_cache_dir
from probes.identity import file_sha256

from .params import PathLike


# Bump when the preprocessing done here changes (channel conversion, masks), so that cached
# values computed by older code are not reused.
_CACHE_FORMAT = "concepts-radiomics/v1"


def _cache_folder(cache_dir: PathLike | bool | None) -> Store | None:
    """The toolkit's store at ``cache_dir``, or at :func:`probes.cache.default_cache_dir` (None: no cache)."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return Store(default_cache_dir())
    return Store(cache_dir)


def _file_digest(path: Path) -> bytes:
    # The shared memoised file identity: a warm rerun costs one stat per image, not a read.
    return bytes.fromhex(file_sha256(path))


def _cache_key(image_path: Path, mask_path: Path | None, params_json: str, channel_key: str,
               version: str) -> str:
    """Store key of image bytes, mask bytes (or "nomask"), parameters, channel and pyradiomics version."""
    return Store.make_key(_CACHE_FORMAT, _file_digest(image_path).hex(),
                          _file_digest(mask_path).hex() if mask_path is not None else "nomask",
                          params_json, channel_key, version)


def _cache_read(store: Store, key: str) -> tuple[dict[str, float | None], dict[str, str]] | None:
    """Cached (values, reasons), or None; the store reports, removes and so recomputes damaged entries."""
    try:
        found = store.get_record(key)
    except OSError:
        return None
    if found is None:
        return None
    data = found[0]
    try:
        values = {str(k): (None if v is None else float(v)) for k, v in data["values"].items()}
        reasons = {str(k): str(v) for k, v in data.get("reasons", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # intact but not a feature record (cannot happen with distinct keys): recompute
    return values, reasons


def _cache_write(store: Store, key: str, image: str, values: Mapping[str, float | None],
                 reasons: Mapping[str, str], version: str) -> bool:
    """Write one store entry (atomic); False when the cache folder is not writable."""
    data = {"format": _CACHE_FORMAT, "image": image, "pyradiomics_version": version,
            "values": dict(values), "reasons": dict(reasons)}
    try:
        store.put_record(key, data, meta={"kind": "radiomics", "image": image})
    except OSError:
        return False
    return True
