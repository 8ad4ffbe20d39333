"""The main job: build a demo case, train (or reuse) its CNN, and write the concept report.

The demo validates itself: the concept the labels were derived from must come out significant
with the expected sign in at least one layer, two concepts drawn at random from the random pool
must not come out significant anywhere, and the report's first sentence says whether both held.

Examples
--------
>>> from concepts.demo.run import run_demo
>>> run_demo("histology", "demo_output", size="small")  # builds, trains, reports (minutes)  # doctest: +SKIP
PosixPath('demo_output/report.html')
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LAYERS = ["conv1", "conv2", "conv3"]


def verdict(table: pd.DataFrame, concept: str, cls: str, expected_sign: int) -> tuple[bool, str]:
    """Whether the ground-truth concept is significant with the expected sign, as one sentence.

    Examples
    --------
    >>> table = pd.DataFrame({"concept": ["nuclei_dense", "nuclei_dense"], "class": ["high_cellularity"] * 2,
    ...                       "layer": ["conv1", "conv2"], "score": [0.55, 0.9], "ubs": [0.1, 0.4],
    ...                       "significant": [False, True]})
    >>> verdict(table, "nuclei_dense", "high_cellularity", +1)
    (True, "PASS: the ground-truth concept 'nuclei_dense' significantly raises the score of class
    'high_cellularity' in layer(s) conv2, as the label rule says it must.")
    >>> verdict(table, "nuclei_dense", "high_cellularity", -1)[0]
    False
    """
    rows = table[(table["concept"] == concept) & (table["class"] == cls)]
    direction = "raises" if expected_sign > 0 else "lowers"
    good = rows[rows["significant"] & (((rows["score"] - 0.5) * expected_sign) > 0)
                & (rows["ubs"] * expected_sign > 0)]
    if len(good):
        layers = ", ".join(good["layer"])
        return True, (f"PASS: the ground-truth concept '{concept}' significantly {direction} the score of class "
                      f"'{cls}' in layer(s) {layers}, as the label rule says it must.")
    return False, (f"FAIL: the ground-truth concept '{concept}' is not significant with the expected sign for "
                   f"class '{cls}' in any layer; the demo did not validate.")


CONTROL_PREFIX = "random_control_"


def random_control(table: pd.DataFrame) -> tuple[bool, str]:
    """Whether the random-concept controls stayed non-significant, as one sentence.

    Examples
    --------
    >>> table = pd.DataFrame({"concept": ["random_control_1", "random_control_2", "nuclei_dense"],
    ...                       "significant": [False, False, True]})
    >>> random_control(table)
    (True, 'Random-concept control: 0 of 2 rows of concepts drawn at random from the random pool are
    significant after correction, as they should not be.')
    """
    rows = table[table["concept"].str.startswith(CONTROL_PREFIX)]
    if rows.empty:
        return True, ""
    n_sig = int(rows["significant"].sum())
    word = "as they should not be" if n_sig == 0 else "which they should not be"
    return n_sig == 0, (f"Random-concept control: {n_sig} of {len(rows)} rows of concepts drawn at random from the "
                        f"random pool are significant after correction, {word}.")


def control_concepts(root: Path, n_sets: int, size: int, seed: int, preprocess: Any = None) -> list[Any]:
    """Concepts made of random-pool images: they must not come out significant."""
    from ..image_files import list_image_files
    from ..sets import ImageSet

    pool = list_image_files(root / "random")
    rng = np.random.default_rng(seed + 7919)
    chosen = rng.choice(len(pool), size=min(len(pool), n_sets * size), replace=False)
    return [ImageSet([pool[i] for i in sorted(chosen[k * size:(k + 1) * size])], name=f"{CONTROL_PREFIX}{k + 1}",
                     preprocess=preprocess) for k in range(n_sets)]


def run_demo(case: str = "histology", out_dir: str | Path = "demo_output", *, size: str = "full",
             n_random: int | None = None, seed: int = 0, progress: bool = True,
             cache_dir: str | Path | None = None) -> Path:
    """Build the case, train or reuse its model, write ``report.html`` (+ CSV, figures); return its path."""
    from ..measures import radiomics
    from ..reporting import report
    from . import build_case
    from .model import demo_model

    start = time.perf_counter()
    out = Path(out_dir)
    info = build_case(case, out / "data" / (case if size == "full" else f"{case}_{size}"), size=size)
    _say(progress, f"built the {case} case ({sum(info.counts.values())} images) in {out / 'data'}")
    model, metrics = demo_model(info, cache_dir=cache_dir, seed=seed, progress=progress)
    _say(progress, f"model: held-out accuracy {metrics.get('test_accuracy', float('nan')):.3f} "
                   f"({'reused from cache' if metrics.get('from_cache') else 'trained'})")

    suggestion: dict[str, Any] = info.measures or {}
    measures = []
    mask_dir = suggestion.get("mask_dir")
    for feature in suggestion.get("features", [])[:2]:
        # Masks mirror the data folder (masks/classes/<class>/<tile>.png), so the class images' masks
        # are under masks/classes. Tiles without a usable region (no nuclei, white-matter-only
        # patches) are expected here: one line says how many were left out.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            measure = radiomics(feature, images=info.root / "classes",
                                masks=Path(mask_dir) / "classes" if mask_dir else None,
                                channel=suggestion.get("channel", "gray"), progress=progress,
                                cache_dir=cache_dir)
        left_out = len({f["image"] for f in measure.failures})
        _say(progress, f"measure {feature}: {len(measure.values)} images"
                       + (f", {left_out} left out (no usable region)" if left_out else ""))
        measures.append(measure)
    if n_random is None:
        n_random = 20
    folder_concepts = [info.root / "concepts" / name for name in info.concept_names]
    concept_size = min(info.counts[f"concepts/{name}"] for name in info.concept_names)
    controls = control_concepts(info.root, 2, concept_size, seed, info.preprocess)
    rep = report(model, LAYERS, concepts=folder_concepts + controls, data=info.root, measures=measures,
                 n_random=n_random, seed=seed, sanity=True, progress=progress, cache_dir=cache_dir,
                 preprocess=info.preprocess,
                 title=f"Concept report — demo case '{case}'")
    table = rep.to_frame()
    ok, headline = verdict(table, info.ground_truth_concept, info.ground_truth_class, info.expected_sign)
    control_ok, control_sentence = random_control(table)
    ok = ok and control_ok
    if not control_ok and headline.startswith("PASS"):
        headline = "FAIL" + headline[4:]
    rep.headline = f"{headline} {control_sentence}".strip()
    rep.provenance["demo"] = {"case": case, "size": size, "label_rule": info.label_rule,
                              "ground_truth": {"concept": info.ground_truth_concept,
                                               "class": info.ground_truth_class,
                                               "expected_sign": info.expected_sign},
                              "model_metrics": metrics, "data_manifest": str(info.manifest),
                              "data_provenance": info.provenance, "validated": ok}
    written = rep.save(out)
    _say(progress, f"{rep.headline}\n(demo finished in {time.perf_counter() - start:.0f} s)")
    return written["html"]


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)
