"""Whole-slide scale (issue 14): many small tiles through ``concepts.score`` and ``concepts.measure_table``.

Run from the repository root::

    python -m benchmarks.wsi             # 2,000 and 20,000 class tiles, radiomics on 1,200 tiles (about 10 min)
    python -m benchmarks.wsi --full      # also 100,000 class tiles (the issue's size; adds several minutes)
    python -m benchmarks.wsi --small     # seconds to a minute: the same plumbing at 300 / 1,200 tiles

The case: 32x32x3 tiles with a small CNN (conv 8 -> conv 16 -> global pooling -> 2 classes), scored at both
conv layers against one concept of 50 tiles and 10 random sets of 50 tiles, with ``memory_budget=0``
(class tiles streamed batch by batch). The class tiles are **generated on the fly** from their index and a
seed (:class:`GeneratedTiles`, an ``ArraySource`` with ``subset``): writing 100,000 PNG files would time
the file system, not the toolkit, and would need 100,000 inodes. Radiomics needs files, so it runs on
tiles written as PNGs (a few hundred), and its cost per tile is extrapolated by arithmetic.

Each configuration runs in its own process so that its peak resident memory (``VmHWM`` / ``ru_maxrss``)
is its own; Dask runs report the peak of every worker process too. Results go to
``benchmarks/results/wsi.md`` and ``wsi.json`` (``--out DIR`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"
SIZE = 32


def _peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MB (the shared reader of :mod:`benchmarks.timing`);
    a module-level function so that Dask can run it on every worker."""
    from benchmarks.timing import peak_mb

    return peak_mb()


def tile(index: int, seed: int, kind: str) -> np.ndarray:
    """One 32x32x3 tile in [0, 1]: pink stroma texture, with dark round nuclei for ``kind="nuclei"`` and for
    every third ``"class"`` tile (so class tiles differ in how much of the concept they show)."""
    # zlib.crc32, not hash(): str hashes differ between processes, and Dask workers must draw the same tiles.
    rng = np.random.default_rng([seed, index, zlib.crc32(kind.encode())])
    image = 0.75 + 0.08 * rng.standard_normal((SIZE, SIZE, 3))
    image[..., 1] -= 0.25
    n_nuclei = {"nuclei": 6, "random": int(rng.integers(0, 3))}.get(kind, 4 * (index % 3 == 0))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(n_nuclei):
        cy, cx, r = rng.uniform(4, SIZE - 4), rng.uniform(4, SIZE - 4), rng.uniform(2, 4)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (0.3, 0.2, 0.5)
    return np.clip(image, 0, 1).astype(np.float32)


class GeneratedTiles:
    """An ``ArraySource`` of ``n`` tiles generated on demand (tile ``start + i`` for ``i < n``).

    Example:
        >>> len(GeneratedTiles(10, seed=0).subset(range(2, 5)))
        3
    """

    def __init__(self, n: int, seed: int, kind: str = "class", start: int = 0, name: str = "tiles") -> None:
        self.n, self.seed, self.kind, self.start, self.name = int(n), int(seed), kind, int(start), name

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for s in range(0, self.n, batch_size):
            yield np.stack([tile(self.start + i, self.seed, self.kind) for i in range(s, min(self.n, s + batch_size))])

    @property
    def content_key(self) -> str:
        return f"generated-tiles-v1:{self.kind}:{self.seed}:{self.start}:{self.n}"

    def subset(self, indices: Any) -> "GeneratedTiles":
        indices = list(indices)
        if indices != list(range(indices[0], indices[-1] + 1)):
            raise ValueError("GeneratedTiles.subset takes a contiguous range.")
        return GeneratedTiles(len(indices), self.seed, self.kind, self.start + indices[0], self.name)


def build_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


# ----------------------------------------------------------------------------- one configuration
def run_score(n: int, workers: int) -> dict[str, Any]:
    """One ``concepts.score`` over ``n`` generated class tiles (per class: two classes of n/2)."""
    import concepts

    model = build_model()
    concept = np.stack([tile(i, 1, "nuclei") for i in range(50)])
    randoms = [np.stack([tile(j * 50 + i, 2, "random") for i in range(50)]) for j in range(10)]
    examples = {"tumour": GeneratedTiles(n // 2, 3, name="tumour"),
                "stroma": GeneratedTiles(n - n // 2, 4, name="stroma")}
    client = cluster = None
    if workers:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        client = Client(cluster)
        client.run(lambda: __import__("tensorflow"))  # worker start-up is not part of the timed call
    start = time.perf_counter()
    result = concepts.score(model, ["conv1", "conv2"], {"nuclei": concept}, examples=examples,
                            class_names=["tumour", "stroma"], random=randoms, n_random=10, n_directions=200,
                            progress=False, cache_dir=False, memory_budget=0, batch_size=64, client=client,
                            robustness=False)
    seconds = time.perf_counter() - start
    out = {"task": "score", "n_tiles": n, "workers": workers, "seconds": seconds,
           "peak_rss_mb": _peak_rss_mb(), "table": result.to_frame()[["class", "layer", "score", "ubs",
                                                                        "p_value"]].to_dict("records")}
    if client is not None:
        out["worker_peak_rss_mb"] = sorted(client.run(_peak_rss_mb).values())
        client.close()
        cluster.close()
    return out


def write_tiles(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (folder / f"t{i:06d}.png").exists():
            Image.fromarray((tile(i, 5, "class") * 255).astype(np.uint8)).save(folder / f"t{i:06d}.png")


def run_radiomics(folder: str, workers: int) -> dict[str, Any]:
    """``concepts.measure_table`` over the PNG tiles of ``folder``: locally (workers=0, one process) or on a
    LocalCluster of ``workers`` single-threaded processes."""
    import concepts

    features = ["original_firstorder_Mean", "original_firstorder_Entropy", "original_glcm_Contrast",
                "original_glcm_Correlation", "original_glrlm_RunEntropy", "original_gldm_DependenceEntropy"]
    client = cluster = None
    if workers:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        client = Client(cluster)
        # Worker start-up (imports, pyradiomics' first call) is not part of the timed call: measure a few
        # tiles first, without the cache, on every worker.
        warm = sorted(Path(folder).glob("*.png"))[:4 * workers]
        concepts.measure_table(warm, features=features, cache_dir=False, progress=False, client=client)
    start = time.perf_counter()
    table = concepts.measure_table(folder, features=features, cache_dir=False, progress=False, n_jobs=1,
                                   client=client)
    seconds = time.perf_counter() - start
    out = {"task": "measure_table", "n_tiles": len(table), "workers": workers, "seconds": seconds,
           "peak_rss_mb": _peak_rss_mb(), "checksum": float(np.nansum(table.to_numpy()))}
    if client is not None:
        out["worker_peak_rss_mb"] = sorted(client.run(_peak_rss_mb).values())
        client.close()
        cluster.close()
    return out


def _in_subprocess(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "benchmarks.wsi", "--one", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.wsi --one {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the whole benchmark
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--full", action="store_true", help="also score 100,000 tiles")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--one", nargs=3, metavar=("TASK", "N_OR_FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        task, what, workers = args.one
        result = run_score(int(what), int(workers)) if task == "score" else run_radiomics(what, int(workers))
        print(json.dumps(result, default=float))
        return 0

    sizes = [300, 1200] if args.small else [2000, 20000] + ([100000] if args.full else [])
    n_radiomics = 120 if args.small else 1200
    runs: list[dict] = []
    for n in sizes:
        runs.append(_in_subprocess(["score", str(n), "0"]))
        print(f"score {n} tiles, local: {runs[-1]['seconds']:.1f} s, peak {runs[-1]['peak_rss_mb']:.0f} MB",
              flush=True)
    for workers in (1, 2):
        runs.append(_in_subprocess(["score", str(sizes[-2] if len(sizes) > 2 else sizes[-1]), str(workers)]))
        print(f"score {runs[-1]['n_tiles']} tiles, {workers} Dask worker(s): {runs[-1]['seconds']:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="wsi-tiles-") as tmp:
        write_tiles(Path(tmp), n_radiomics)
        # Interleaved repetitions (0, 1, 2, 1, 2 workers), best of each: the machine is shared, and a burst of
        # someone else's load during one run should not decide the speed-up.
        for workers in (0, 1, 2, 1, 2):
            runs.append(_in_subprocess(["radiomics", tmp, str(workers)]))
            print(f"measure_table {n_radiomics} tiles, {workers or 'no'} Dask worker(s): "
                  f"{runs[-1]['seconds']:.1f} s", flush=True)
    report = summarise(runs, small=args.small)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "wsi_small" if args.small else "wsi"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=float))
    (out / f"{name}.md").write_text(render(report))
    print(render(report))
    return 0


def summarise(runs: list[dict], small: bool) -> dict[str, Any]:
    local = [r for r in runs if r["task"] == "score" and r["workers"] == 0]
    dask_score = {r["workers"]: r for r in runs if r["task"] == "score" and r["workers"]}
    rad: dict[int, dict] = {}
    for r in runs:
        if r["task"] == "measure_table" and (r["workers"] not in rad or r["seconds"] < rad[r["workers"]]["seconds"]):
            rad[r["workers"]] = r
    # Tables must agree between local and Dask runs of the same size.
    same = [r for r in local if r["n_tiles"] == dask_score[1]["n_tiles"]]
    agree = None
    if same:
        a = np.array([[row["score"], row["ubs"], row["p_value"]] for row in same[0]["table"]], float)
        b = np.array([[row["score"], row["ubs"], row["p_value"]] for row in dask_score[2]["table"]], float)
        agree = float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
        # (p-values below 1e-12 are compared too: a relative difference there is still a difference)
    per_tile = {w: r["seconds"] / r["n_tiles"] for w, r in rad.items()}
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "mode": "small" if small else "default",
        "score_local": [{k: r[k] for k in ("n_tiles", "seconds", "peak_rss_mb")} for r in local],
        "score_peak_rise_mb": local[-1]["peak_rss_mb"] - local[0]["peak_rss_mb"],
        "score_dask": {w: {k: r[k] for k in ("n_tiles", "seconds", "peak_rss_mb", "worker_peak_rss_mb")}
                       for w, r in dask_score.items()},
        "score_speedup_2_over_1": dask_score[1]["seconds"] / dask_score[2]["seconds"],
        "score_dask_vs_local_max_rel_diff": agree,
        "radiomics": {w: {k: r.get(k) for k in ("n_tiles", "seconds", "peak_rss_mb", "worker_peak_rss_mb",
                                                "checksum")} for w, r in rad.items()},
        "radiomics_speedup_2_over_1": rad[1]["seconds"] / rad[2]["seconds"],
        "radiomics_seconds_per_tile": per_tile,
        "score_seconds_per_tile_local": local[-1]["seconds"] / local[-1]["n_tiles"],
        "runs": [{k: v for k, v in r.items() if k != "table"} for r in runs],
    }


def render(report: dict[str, Any]) -> str:
    lines = ["# Whole-slide scale: tiles through score and measure_table", "",
             f"Machine: {report['machine']['cpus']} CPUs, load average {report['machine']['load_average']}; "
             f"mode: {report['mode']}. Class tiles are generated on the fly (see `benchmarks/wsi.py`).", "",
             "## score (streamed, memory_budget=0), one process", "",
             "| class tiles | seconds | peak RSS (MB) |", "|---:|---:|---:|"]
    for r in report["score_local"]:
        lines.append(f"| {r['n_tiles']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Peak memory rise from the smallest to the largest size: {report['score_peak_rise_mb']:.0f} MB.", "",
              "## score on a LocalCluster", "", "| workers | class tiles | seconds | client peak (MB) | worker peaks (MB) |",
              "|---:|---:|---:|---:|---|"]
    for w, r in report["score_dask"].items():
        lines.append(f"| {w} | {r['n_tiles']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{', '.join(f'{m:.0f}' for m in r['worker_peak_rss_mb'])} |")
    lines += ["", f"Speed-up of 2 workers over 1: {report['score_speedup_2_over_1']:.2f}x. "
              f"Largest relative difference of score/ubs/p_value vs the local table: "
              f"{report['score_dask_vs_local_max_rel_diff']}.", "",
              "## measure_table (pyradiomics, 6 features, whole tile; best of the interleaved repetitions)", "",
              "| Dask workers | tiles | seconds | s per tile | worker peaks (MB) |", "|---:|---:|---:|---:|---|"]
    for w, r in report["radiomics"].items():
        peaks = ", ".join(f"{m:.0f}" for m in (r.get("worker_peak_rss_mb") or []))
        lines.append(f"| {w or 'none (local, 1 process)'} | {r['n_tiles']:,} | {r['seconds']:.1f} | "
                     f"{r['seconds'] / r['n_tiles'] * 1000:.1f} ms | {peaks} |")
    s_tile = report["radiomics_seconds_per_tile"][1]
    score_tile = report["score_seconds_per_tile_local"]
    lines += ["", f"Speed-up of 2 workers over 1: {report['radiomics_speedup_2_over_1']:.2f}x (target 1.6x).", "",
              "## Extrapolation (measured cost per tile x tiles / workers)", "",
              f"* radiomics: {s_tile * 1000:.1f} ms per tile per worker -> 100,000 tiles take "
              f"{s_tile * 1e5 / 3600:.2f} h on 1 worker, {s_tile * 1e5 / 64 / 60:.1f} min on 64 workers "
              "(tasks are independent: the scheduler's overhead is included in the per-tile time);",
              f"* score: {score_tile * 1000:.2f} ms per class tile in one process (2 cores) -> 1,000,000 tiles "
              f"take {score_tile * 1e6 / 3600:.2f} h locally; sharded, each worker does its share of the gradient "
              "pass and the concept/random side is computed once, so time ~ that share plus the fixed phase 1;",
              "* memory per worker does not grow with the number of tiles (streamed shards); the client holds "
              "O(tiles x concepts) floats of per-example numbers (40 bytes per tile and concept per layer)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
