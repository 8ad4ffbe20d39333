"""The embedded default demo validates itself end to end (reduced size for CI)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from concepts.demo.run import random_control, run_demo, verdict  # noqa: E402


@pytest.mark.slow
def test_small_histology_demo_finds_its_ground_truth(tmp_path):
    html = run_demo("histology", tmp_path / "out", size="small", progress=False, cache_dir=tmp_path / "cache")
    assert html.exists() and html.name == "report.html"
    table = pd.read_csv(tmp_path / "out" / "report.csv")
    ok, sentence = verdict(table, "nuclei_dense", "high_cellularity", +1)
    assert ok, sentence
    control_ok, control_sentence = random_control(table)
    assert control_ok, control_sentence
    assert (table["concept"].str.startswith("random_control_")).any()
    text = html.read_text(encoding="utf-8")
    assert "PASS: the ground-truth concept" in text
    assert text.index("PASS: the ground-truth concept") < text.index("<table")
    # The sanity check on randomised weights ran and is reported.
    assert "randomised model weights" in text


def test_verdict_needs_significance_and_the_right_sign():
    table = pd.DataFrame({
        "class": ["a", "a"], "layer": ["l1", "l2"], "concept": ["c", "c"],
        "significant": [True, False], "score": [0.2, 0.9], "ubs": [-3.0, 2.0],
    })
    ok, sentence = verdict(table, "c", "a", +1)
    assert not ok and sentence.startswith("FAIL")
    ok, sentence = verdict(table, "c", "a", -1)
    assert ok and "l1" in sentence and sentence.startswith("PASS")
