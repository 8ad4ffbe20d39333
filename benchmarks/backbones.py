"""Time and peak memory of a concept score on a real-size backbone (issue 10, item 7).

Run from the repository root::

    python -m benchmarks.backbones            # DenseNet121 at 224x224x3, conv4_block24_concat (a few minutes)
    python -m benchmarks.backbones --small    # seconds: the same plumbing at 32x32, 3 random sets of 6

The case: a ``keras.applications.DenseNet121`` (``weights=None``, nothing downloaded) nested in a
small classification head, probed at ``densenet121/conv4_block24_concat`` (14x14x1024 = 200,704
activations per image), with a concept of 50 images, 20 random sets of 50 images each (one
sub-folder per set, so 1,000 distinct random images: the worst case for memory) and two classes
of 25 examples. Images are synthetic PNGs written to a temporary folder; the activation cache is
a fresh temporary folder, so the run is cold.

Peak memory is the process's peak resident set (``VmHWM``), which includes TensorFlow, the model
and the images; the target of the issue is under 4 GB. Results go to
``benchmarks/results/backbones.md`` and ``backbones.json`` (``--out DIR`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import peak_mb, rss_mb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"
LIMIT_GB = 4.0


def _peak_rss_gb() -> float:
    """Peak resident set of this process so far, in GB (the shared reader of :mod:`benchmarks.timing`)."""
    return peak_mb() / 1024


def _rss_gb() -> float:
    return rss_mb() / 1024


def _write_images(folder: Path, n: int, size: int, rng: Any, striped: bool) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        if striped:  # concept: stripes of random period and phase
            period = rng.uniform(4, 12)
            base = 0.5 + 0.5 * np.sin(2 * np.pi * (xx / period + rng.uniform()))
        else:  # random: smooth blobs
            base = rng.uniform(size=(size // 8 + 1, size // 8 + 1)).repeat(8, 0).repeat(8, 1)[:size, :size]
        image = np.clip(base[..., None] * rng.uniform(0.6, 1.0, size=3) + rng.normal(0, 0.05, (size, size, 3)),
                        0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"img_{i:04d}.png")


def build_case(root: Path, size: int, concept_n: int, n_random: int, set_size: int, n_examples: int) -> Path:
    """Write the synthetic data folder (classes/, concepts/striped/, random/set_XX/) under ``root``."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = root / "data"
    _write_images(data / "concepts" / "striped", concept_n, size, rng, striped=True)
    for j in range(n_random):
        _write_images(data / "random" / f"set_{j:02d}", set_size, size, rng, striped=False)
    for name, striped in (("a", True), ("b", False)):
        _write_images(data / "classes" / name, n_examples, size, rng, striped=striped)
    (data / "classes.txt").write_text("a\nb\n")
    return data


def build_model(size: int) -> Any:
    """DenseNet121 (weights=None) nested in a two-class head."""
    import keras

    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(size, size, 3))
    inp = keras.Input((size, size, 3))
    x = base(inp)
    out = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="densenet_head")


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(tempfile.mkdtemp(prefix="bench-backbones-"))
    try:
        t0 = time.perf_counter()
        data = build_case(work, args.size, args.concept_n, args.n_random, args.set_size, args.examples)
        t_data = time.perf_counter() - t0
        import concepts

        t0 = time.perf_counter()
        model = build_model(args.size)
        t_model = time.perf_counter() - t0
        rss_before = _rss_gb()
        layer = f"{model.layers[1].name}/{args.layer}"
        t0 = time.perf_counter()
        result = concepts.score(model, layer, data / "concepts" / "striped", n_random=args.n_random,
                                batch_size=args.batch_size, cache_dir=work / "cache", progress=False)
        t_score = time.perf_counter() - t0
        peak = _peak_rss_gb()
        table = result.to_frame()
        prov = result.provenance
        width = prov["layers"][layer]["width"]
        return {
            "case": f"DenseNet121 {args.size}x{args.size}x3 at {layer}",
            "layer": layer, "width": int(width), "image_size": args.size,
            "concept_images": args.concept_n, "random_sets": args.n_random, "random_set_size": args.set_size,
            "class_examples": 2 * args.examples, "batch_size": args.batch_size,
            "engine_batches": int(prov.get("engine_batches", -1)),
            "seconds_write_images": round(t_data, 1), "seconds_build_model": round(t_model, 1),
            "seconds_score": round(t_score, 1),
            "rss_before_score_gb": round(rss_before, 2), "peak_rss_gb": round(peak, 2),
            "limit_gb": LIMIT_GB, "within_limit": bool(peak < LIMIT_GB),
            "rows": table[["class", "score", "ubs", "p_value", "significant"]].to_dict("records"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(),
                        # The machine is shared: the load says how much of it this run had.
                        "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``backbones.json`` and a readable ``backbones.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "backbones.json", out / "backbones.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    verdict = "PASS" if results["within_limit"] else "MISS"
    lines = [
        "# Backbone benchmark (issue 10)", "",
        f"{results['case']}: width {results['width']:,}, concept of {results['concept_images']} images, "
        f"{results['random_sets']} random sets of {results['random_set_size']} (distinct images), "
        f"{results['class_examples']} class examples, batch size {results['batch_size']}; cold cache.", "",
        "| measure | value |", "|---|---|",
        f"| `concepts.score` wall time | {results['seconds_score']} s |",
        f"| engine batches | {results['engine_batches']} |",
        f"| resident memory before the call | {results['rss_before_score_gb']} GB |",
        f"| peak resident memory (VmHWM) | {results['peak_rss_gb']} GB |",
        f"| target: peak < {results['limit_gb']} GB | {verdict} |", "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
        f"{results['machine']['platform']}; {results['when']}"
        + (f"; load average at the end {results['machine']['load_average_at_end']}"
           if "load_average_at_end" in results["machine"] else "") + ".", "",
        "Run with `python -m benchmarks.backbones`.", "",
    ]
    md_path.write_text("\n".join(lines))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a seconds-long run of the same plumbing")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.small:
        args.size, args.concept_n, args.n_random, args.set_size, args.examples = 32, 8, 3, 8, 4
        args.layer, args.batch_size = "conv4_block24_concat", 8
    else:
        args.size, args.concept_n, args.n_random, args.set_size, args.examples = 224, 50, 20, 50, 25
        args.layer, args.batch_size = "conv4_block24_concat", 32
    results = run(args)
    out = args.out or (DEFAULT_OUT if not args.small else Path(tempfile.mkdtemp(prefix="bench-small-")))
    json_path, md_path = write(results, out)
    print(md_path.read_text())
    print(f"written: {json_path} {md_path}")
    return 0 if results["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
