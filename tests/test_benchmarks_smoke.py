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
    for name in ("reference", "reference_all_pairs"):
        case = cases[name]
        for key in ("floor_best_s", "e2e_best_s", "ratio", "peak_rss_mb", "layer_widths", "cavs_per_layer",
                    "breakdown_mean_s"):
            assert key in case, (name, key)
        assert case["floor_best_s"] > 0 and case["e2e_best_s"] > 0
        assert case["peak_rss_mb"] > 0
    ref = cases["reference"]
    assert ref["cavs_per_layer"] == 2 * 3 + 3  # 2 concepts × 3 runs + a ring of 3 random pairs
    assert cases["reference_all_pairs"]["cavs_per_layer"] == 2 * 4 + 6  # all 6 pairs of 4 sets
    assert {"disk_cold_best_s", "disk_warm_best_s", "warm_speedup"} <= set(ref)
    rad = cases["radiomics"]
    for key in ("serial_features_per_s", "parallel_features_per_s", "parallel_speedup", "warm_speedup"):
        assert rad[key] > 0

    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == {"reference", "reference_all_pairs", "random_sets_10_to_100", "radiomics_parallel",
                            "warm_cache_score", "warm_cache_radiomics"}
    assert all(t["status"] in {"PASS", "MISS", "n/a"} for t in targets.values())
    assert targets["random_sets_10_to_100"]["status"] == "n/a"  # no R series in smoke mode

    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Benchmark results (smoke run)")
    for heading in ("## Machine", "## Targets (issue 6)", "## End-to-end against the compute floor",
                    "## Radiomics", "## Micro-checks"):
        assert heading in markdown
    assert "shared" in markdown
    assert "| reference |" in markdown
