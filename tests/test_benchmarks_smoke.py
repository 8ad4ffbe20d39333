"""The benchmark runner works end to end (tiny ``--smoke`` mode); timings are never asserted here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_writes_results(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    assert report["mode"] == "smoke"
    machine = report["machine"]
    assert machine["logical_cores"] >= 1
    assert {"tensorflow", "keras", "numpy"} <= set(machine["versions"])
    assert "ratios are taken within one process" in machine["shared_machine"]

    cases = {c["name"]: c for c in report["cases"]}
    assert {"reference", "reference_all_pairs", "radiomics", "micro_checks"} <= set(cases)
    assert all(c["status"] == "ok" for c in cases.values()), [c.get("error") for c in cases.values()]
    ref = cases["reference"]  # the issue-13 scenarios, on a tiny stand-in
    for key in ("floor_best_s", "floor_decode_best_s", "three_calls_best_s", "three_calls_ratio", "speedup_vs_captum",
                "one_call_ratio", "disk_cold_vs_memory", "warm_speedup", "new_concept_ratio", "peak_rss_mb",
                "three_calls_breakdown_s"):
        assert key in ref, key
    assert len(ref["three_calls_each_best_s"]) == 2  # one call per concept
    assert ref["floor_best_s"] > 0 and ref["three_calls_best_s"] > 0
    allp = cases["reference_all_pairs"]
    for key in ("floor_best_s", "e2e_best_s", "ratio", "peak_rss_mb", "layer_widths", "cavs_per_layer", "breakdown_s",
                "disk_cold_best_s", "warm_speedup"):
        assert key in allp, key
    assert allp["cavs_per_layer"] == 2 * 4 + 6  # 2 concepts × 4 runs + all 6 pairs of 4 sets
    # Phases come from a profiler, not from patched library functions.
    assert "engine passes" in allp["breakdown_s"] and "CAV fits" in allp["breakdown_s"]
    rad = cases["radiomics"]
    for key in ("serial_features_per_s", "parallel_features_per_s", "parallel_speedup", "warm_speedup"):
        assert rad[key] > 0

    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == {"three_calls_seconds", "three_calls_vs_captum", "three_calls_floor", "one_call_floor",
                            "all_pairs_floor", "new_concept_floor_share", "disk_cold_vs_memory",
                            "random_sets_10_to_100", "warm_rerun_speedup", "radiomics_parallel",
                            "warm_cache_radiomics"}
    assert all(t["status"] in {"PASS", "MISS", "n/a"} for t in targets.values())
    assert targets["random_sets_10_to_100"]["status"] == "n/a"  # no R series in smoke mode

    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Benchmark results (smoke run)")
    for heading in ("## Machine", "## Targets (issue 13", "## Reference work: the scenarios",
                    "## End-to-end against the compute floor", "## Radiomics", "## Micro-checks"):
        assert heading in markdown
    assert "Other load on the machine" in markdown and "Captum" in markdown  # whatever the load was
    assert "| reference_all_pairs |" in markdown


def test_benchmark_code_patches_nothing():
    """Timing goes through a profiler: no benchmark module assigns to library attributes."""
    for path in (ROOT / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "setattr(" not in text, path.name
        assert "Phases" not in text, path.name
