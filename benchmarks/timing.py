"""Measuring: memory peaks, repetitions, the compute floor and where the time goes.

One implementation of the ``/proc`` readers for every benchmark script (``run``, ``wsi``,
``backbones``). Phase breakdowns come from a profiler (:func:`phase_profile`, cProfile
aggregated by the library's own functions, and :func:`profile_call`, pyinstrument), never from
patching library code: the code measured is the code users run.
"""
from __future__ import annotations

import contextlib
import cProfile
import gc
import os
import platform
import pstats
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset this process's peak resident set (Linux >= 4.0).

    Returns
    -------
    bool
        False where the kernel does not allow it (the peak then covers the whole process).
    """
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Current resident set of this process in MB (``VmRSS``; ``ru_maxrss`` where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return _maxrss_mb() if kb is None else kb / 1024


def peak_mb() -> float:
    """Peak resident set of this process in MB since start or :func:`reset_peak` (``VmHWM``)."""
    kb = _status_kb("VmHWM")
    return _maxrss_mb() if kb is None else kb / 1024


def children_peak_mb() -> float:
    """Largest peak resident set among this process's finished children, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ repetitions
def best(values: list[float]) -> float:
    """Best (smallest) of the repetitions.

    On a shared machine contention only ever adds time, so the minimum is the least disturbed
    measurement; the median is kept in the JSON too.
    """
    return float(min(values)) if values else float("nan")


def median(values: list[float]) -> float:
    """Median of the repetitions (NaN when there are none)."""
    return float(statistics.median(values)) if values else float("nan")


def load1() -> float | None:
    """The 1-minute load average (2 cores are 'full' at 2.0); None where unavailable."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ------------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    """Cores, memory, CPU, load, library versions and the commit measured."""
    from importlib import metadata

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "logical_cores": os.cpu_count()}
    with contextlib.suppress(Exception):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(Exception):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(("MemTotal", "MemAvailable")):
                key, value = line.split(":")
                info[{"MemTotal": "memory_total_gb", "MemAvailable": "memory_available_gb"}[key]] = round(
                    float(value.split()[0]) / 2**20, 1)
    with contextlib.suppress(Exception):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    versions = {}
    for package in ("concepts-toolkit", "tensorflow", "keras", "numpy", "scipy", "scikit-learn", "pandas",
                    "pyradiomics-bhklab", "SimpleITK", "pillow", "pyinstrument", "psutil"):
        with contextlib.suppress(Exception):
            versions[package] = metadata.version(package)
    info["versions"] = versions
    with contextlib.suppress(Exception):
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    with contextlib.suppress(Exception):
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "concepts", "probes"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.split("\n")
        info["library_uncommitted_changes"] = [line[3:] for line in dirty if line.strip()]
    load = info.get("load_average_at_start")
    busy = bool(load) and float(load[0]) > 0.5
    info["shared_machine"] = (
        ("likely: the load average was above 0.5 before the benchmark started, so other work shared the cores "
         "and absolute seconds are noisy" if busy else "no other load seen at start")
        + "; ratios are taken within one process, back to back, from the best of interleaved repetitions")
    return info


# ------------------------------------------------------------------------------------------------ floor
class FixedImages:
    """An in-memory image source with a precomputed content key (hashing is not compute)."""

    def __init__(self, images: Any, key: str) -> None:
        self.images = images
        self.content_key = key

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int):
        """Consecutive slices of ``batch_size`` images."""
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size]


def images_used(inputs: dict[str, Any]) -> tuple[list[Path], list[tuple[str, int, list[Path]]]]:
    """Distinct non-class image files of an analysis, and each class's example files.

    Parameters
    ----------
    inputs
        The inputs :func:`concepts.scoring.prepare` resolved (classes, concepts, random sets).

    Returns
    -------
    tuple
        ``(others, classes)``: the distinct files outside the classes, and ``(name, index, files)``
        per class.
    """
    classes = [(c.name, c.index, list(c.images.files)) for c in inputs["classes"]]
    class_files = {f.resolve() for _, _, files in classes for f in files}
    others: dict[Path, None] = {}
    sets = [c.images for c in inputs["folder_concepts"]] + [m.images for m in inputs["measure_concepts"]] \
        + list(inputs["random_sets"])
    for image_set in sets:
        for f in image_set.files:
            if f.resolve() not in class_files:
                others.setdefault(f.resolve(), None)
    return list(others), classes


class Floor:
    """The compute floor of one analysis, ready to be timed repeatedly.

    The floor (issue 13): decoding every distinct image once, one forward pass over all of them
    and the forward+backward passes of the class examples. :meth:`run` times the passes (images
    pre-decoded, step functions pre-traced); :meth:`run_decode` times the decoding, so
    :attr:`best_total` adds the two best times.

    Parameters
    ----------
    model, layers, inputs, batch_size
        The analysis' model, layer names, resolved inputs (see :func:`images_used`) and batch size.
    """

    def __init__(self, model: Any, layers: list[str], inputs: dict[str, Any], batch_size: int) -> None:
        import numpy as np

        from probes.cache import ActivationCache
        from probes.engine import Engine

        self.engine = Engine(model, layers, batch_size=batch_size, cache=ActivationCache(None), progress=False)
        self._shape = tuple(self.engine.input_shape)
        others, classes = images_used(inputs)
        self._files = (others, classes)
        start = time.perf_counter()
        decoded = self._decode()
        self.decode_seconds = time.perf_counter() - start
        other_images, class_images = decoded
        self.others = FixedImages(other_images if len(others) else np.zeros((0, *self._shape), np.float32),
                                  "floor-others")
        self.classes = [(index, FixedImages(images, f"floor-class-{name}"))
                        for (name, index, _), images in zip(classes, class_images)]
        self.n_images = len(self.others) + sum(len(s) for _, s in self.classes)
        self.n_class_examples = sum(len(s) for _, s in self.classes)
        self._ActivationCache = ActivationCache
        # Trace both step functions and run one whole floor, outside the timings (the first full-size
        # batches pay for kernel set-up).
        tiny = FixedImages(self.others.images[:2] if len(self.others) else self.classes[0][1].images[:2], "warm-up")
        self.engine.run(tiny)
        self.engine.run(tiny, class_index=self.classes[0][0])
        self.run()

    def _decode(self) -> tuple[Any, list[Any]]:
        from concepts.sets import ImageSet

        others, classes = self._files
        other_images = ImageSet(others, input_shape=self._shape).load_all() if others else None
        return other_images, [ImageSet(files, input_shape=self._shape).load_all() for _, _, files in classes]

    def run_decode(self) -> float:
        """Seconds to decode every distinct image once (PNG to model input)."""
        start = time.perf_counter()
        self._decode()
        return time.perf_counter() - start

    def run(self) -> float:
        """Seconds for the passes: forward over the non-class images, forward+backward over each class."""
        self.engine.cache = self._ActivationCache(None)
        before = self.engine.n_batches_run
        start = time.perf_counter()
        if len(self.others):
            self.engine.run(self.others)
        for index, source in self.classes:
            self.engine.run(source, class_index=index)
        elapsed = time.perf_counter() - start
        self.batches = self.engine.n_batches_run - before
        self.engine.cache = self._ActivationCache(None)
        return elapsed

    def run_subset(self, files: list[Path]) -> float:
        """Seconds to decode ``files`` and run one forward pass over them (a concept's floor share)."""
        from concepts.sets import ImageSet

        self.engine.cache = self._ActivationCache(None)
        start = time.perf_counter()
        images = ImageSet(list(files), input_shape=self._shape).load_all()
        self.engine.run(FixedImages(images, "floor-subset"))
        elapsed = time.perf_counter() - start
        self.engine.cache = self._ActivationCache(None)
        return elapsed


# ------------------------------------------------------------------------------------------------ profiles
#: Library functions whose inclusive time makes the phase breakdown: (file suffix, function, label).
PHASES = (
    ("probes/engine.py", "run", "engine passes"),
    ("probes/engine.py", "stream", "engine passes"),
    ("concepts/sets.py", "_load", "image decoding"),
    ("probes/linear.py", "fit_cav_batch", "CAV fits"),
    # The layers' CAV fits run side by side on worker threads, which cProfile does not see: the main
    # thread's wait for them is the phase's time.
    ("probes/blas_threads.py", "map_side_by_side", "CAV fits"),
    ("probes/regression.py", "fit", "RCV fits"),
    ("probes/streaming.py", "project_batches", "projections"),
    ("probes/cache.py", "put", "cache writes"),
    ("probes/cache.py", "put_record", "cache writes"),
    ("probes/cache.py", "get", "cache reads"),
    ("probes/cache.py", "get_record", "cache reads"),
    ("concepts/analysis.py", "_row", "row statistics"),
    ("concepts/analysis.py", "_total_variance", "total variance"),
    ("concepts/scoring.py", "prepare", "prepare (sets, content keys)"),
    ("concepts/measures.py", "_extract", "radiomics features"),
)


def _project_name(filename: str) -> str | None:
    for marker in ("/concepts/", "/probes/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return None


def phase_profile(fn: Callable[[], Any], top: int = 12) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` once under cProfile; aggregate the time by the library's functions.

    Parameters
    ----------
    fn
        The call to profile (its own time is not a benchmark figure: cProfile adds overhead).
    top
        How many project functions to list by inclusive time.

    Returns
    -------
    tuple
        ``(result, profile)`` where ``profile`` has ``seconds`` (wall time under the profiler),
        ``phases`` (inclusive seconds per :data:`PHASES` label; nested calls of one label are
        counted once by cProfile's cumulative time) and ``functions`` (the project functions
        with most inclusive time).
    """
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        result = fn()
    finally:
        profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    phases: dict[str, float] = defaultdict(float)
    functions: dict[str, float] = {}
    for (filename, line, name), (_, _, _, cumulative, callers) in stats.items():
        short = _project_name(filename)
        if short is None:
            continue
        functions[f"{name} ({short}:{line})"] = cumulative
        for suffix, function, label in PHASES:
            if short == suffix and name == function:
                # Count only the calls not made from inside the same labelled phase.
                outer = sum(v[3] for (f, _, n), v in callers.items()
                            if not any((_project_name(f) == s and n == fn_) for s, fn_, lb in PHASES if lb == label))
                phases[label] += outer if callers else cumulative
    ranked = sorted(functions.items(), key=lambda kv: -kv[1])[:top]
    return result, {"seconds": round(wall, 3), "phases": {k: round(v, 3) for k, v in sorted(
        phases.items(), key=lambda kv: -kv[1])}, "functions": [
        {"function": k, "seconds": round(v, 3), "percent": round(100 * v / max(wall, 1e-9), 1)} for k, v in ranked]}


def profile_call(fn: Callable[[], Any], top: int = 10) -> dict[str, Any]:
    """Run ``fn`` once under pyinstrument (statistical, low overhead).

    Returns
    -------
    dict
        ``profiled_seconds``, the functions with most self time (``self_time``) and the project's
        functions with most total time (``project_total_time``), in seconds and percent.
    """
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"error": "pyinstrument is not installed (pip install -e '.[bench]')"}
    profiler = Profiler(interval=0.002)
    profiler.start()
    try:
        fn()
    finally:
        session = profiler.stop()
    root = session.root_frame()
    total = max(session.duration, 1e-9)
    self_time: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)

    def name_of(frame) -> str:
        path = str(frame.file_path or "")
        short = _project_name(path)
        if short is None:
            short = path.split("site-packages/", 1)[-1] if "site-packages/" in path else path.split("/lib/python")[-1]
        return f"{frame.function} ({short}:{frame.line_no})"

    def walk(frame, parent: str, active: frozenset) -> None:
        if frame.is_synthetic:  # "[self]" and similar: time spent in the parent itself (C code included)
            self_time[parent] += frame.time
            return
        name = name_of(frame)
        if not frame.children:
            self_time[name] += frame.time
        if _project_name(str(frame.file_path or "")) and name not in active:
            inclusive[name] += frame.time
            active = active | {name}
        for child in frame.children:
            walk(child, name, active)

    if root is not None:
        walk(root, "(root)", frozenset())

    def table(values: dict[str, float]) -> list[dict[str, Any]]:
        ranked = sorted(values.items(), key=lambda kv: -kv[1])[:top]
        return [{"function": k, "seconds": round(v, 3), "percent": round(100 * v / total, 1)} for k, v in ranked]

    return {"profiled_seconds": round(total, 3), "self_time": table(self_time), "project_total_time": table(inclusive)}
