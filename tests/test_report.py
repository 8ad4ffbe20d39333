"""``concepts.report`` end to end on the planted-concept model of ``synthetic.py``.

The ``striped`` logit rises with horizontal-stripe energy (see ``synthetic.py``), so the folder
concept ``horizontal`` must come out significant with a positive UBS for ``striped`` (negative for
``other``) in both ``conv1`` and ``conv2``, a noise-image concept must not, and everything must
collapse on a copy of the model with randomised weights. A continuous measure (mean absolute
vertical intensity change, i.e. horizontal-stripe contrast) is scored alongside as an RCV.
"""
from __future__ import annotations

import base64
import math
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import concepts  # noqa: E402
from concepts.analysis import COLUMNS  # noqa: E402
from probes.engine import Engine  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

FAST = dict(n_random=6, n_directions=200, progress=False, cache_dir=False)
LAYERS = ["conv1", "conv2"]


def row_contrast(image: np.ndarray) -> float:
    """Mean |vertical intensity change|: high for horizontal stripes."""
    return float(np.abs(np.diff(np.asarray(image, dtype=float), axis=0)).mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("report_data"), n_noise_concepts=1)


@pytest.fixture(scope="module")
def model():
    return build_model()


def _concepts(data):
    return [data / "concepts" / "horizontal", data / "concepts" / "noise_00"]


@pytest.fixture(scope="module")
def rep(model, data):
    measure = concepts.measure(row_contrast, name="row_contrast")
    return concepts.report(model, LAYERS, _concepts(data), data=data, measures=[measure], sanity=True,
                           title="Planted report", **FAST)


def _row(table, cls, layer, concept):
    rows = table[(table["class"] == cls) & (table["layer"] == layer) & (table["concept"] == concept)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, written out independently; NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for k, idx in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[idx]))
        out[idx] = running
    return out


# --------------------------------------------------------------------------- the table
def test_one_row_per_class_layer_concept_with_ubs_columns(rep):
    table = rep.to_frame()
    assert list(table.columns) == COLUMNS
    for col in ("ubs", "ubs_p", "d"):
        assert col in table.columns
    assert len(table) == 2 * 2 * 3  # classes x layers x (2 folder concepts + 1 measure)
    keys = table[["class", "layer", "concept"]].apply(tuple, axis=1)
    assert keys.is_unique
    assert set(table["class"]) == {"striped", "other"}
    assert set(table["layer"]) == set(LAYERS)
    assert set(table["concept"]) == {"horizontal", "noise_00", "row_contrast"}
    assert set(table.loc[table["concept"] == "row_contrast", "kind"]) == {"rcv"}
    assert set(table.loc[table["concept"] != "row_contrast", "kind"]) == {"cav"}
    cav = table[table["kind"] == "cav"]
    assert (cav["d"] == 14 * 14 * 4).all()  # conv1 and conv2 are 14x14x4 (valid 3x3, then 1x1)
    assert table["ubs_p"].between(0, 1).all()
    widths = rep.provenance["layers"]
    assert widths["conv1"]["width"] == widths["conv2"]["width"] == 14 * 14 * 4


def test_one_correction_across_the_whole_table(rep):
    table = rep.to_frame()
    p = table["p_value"].to_numpy(float)
    q = table["q_value"].to_numpy(float)
    finite = ~np.isnan(p)
    assert finite.sum() > 4
    assert (q[finite] >= p[finite] - 1e-15).all()
    np.testing.assert_allclose(q, holm(p), rtol=1e-12, atol=0, equal_nan=True)
    # Not per layer: correcting each layer on its own gives smaller q-values somewhere.
    per_layer = np.concatenate([holm(p[(table["layer"] == layer).to_numpy()]) for layer in LAYERS])
    whole = np.concatenate([q[(table["layer"] == layer).to_numpy()] for layer in LAYERS])
    assert np.nansum(whole) > np.nansum(per_layer)
    np.testing.assert_array_equal(table["significant"].to_numpy(), np.nan_to_num(q, nan=1.0) < 0.05)
    assert rep.provenance["correction"] == "holm"


def test_one_engine_pass_per_image_set_for_all_layers(model, data, monkeypatch):
    batch_size = 8
    passes: list[tuple[int, tuple, tuple]] = []
    original = Engine._pass

    def counting(self, source, act_layers, grad_layers, class_index, want_outputs, **kw):
        passes.append((len(source), tuple(act_layers), tuple(grad_layers)))
        return original(self, source, act_layers, grad_layers, class_index, want_outputs, **kw)

    monkeypatch.setattr(Engine, "_pass", counting)
    measure = concepts.measure(row_contrast, name="row_contrast")
    two = concepts.report(model, LAYERS, _concepts(data), data=data, measures=[measure], batch_size=batch_size,
                          **FAST)
    n_two = list(passes)
    passes.clear()
    one = concepts.report(model, ["conv1"], _concepts(data), data=data, measures=[measure], batch_size=batch_size,
                          **FAST)
    n_one = list(passes)

    # Image sets: 2 classes (24 images, with gradients), 2 concepts (20), the measured images (the
    # 48 class examples), and ONE pass over the distinct images of the n_random random sets (20
    # each, drawn from one pool of 120, so they overlap).
    for seen in (n_two, n_one):
        sizes = sorted(n for n, _, _ in seen)
        for fixed in (24, 24, 20, 20, 48):
            sizes.remove(fixed)
        assert len(sizes) == 1 and 20 < sizes[0] <= 20 * FAST["n_random"]
    sizes = [n for n, _, _ in n_two]
    for _, acts, grads in n_two:
        assert set(acts) == set(LAYERS)  # every layer in the same pass
        assert set(grads) in (set(), set(LAYERS))
    assert sum(1 for _, _, g in n_two if g) == 2  # one gradient pass per class
    expected_batches = sum(math.ceil(n / batch_size) for n in sizes)
    assert two.provenance["engine_batches"] == expected_batches
    assert one.provenance["engine_batches"] == expected_batches  # independent of the number of layers


def test_planted_concept_keeps_significant_ubs_of_the_same_sign_in_every_layer(rep):
    table = rep.to_frame()
    for cls, sign in (("striped", 1), ("other", -1)):
        for layer in LAYERS:
            row = _row(table, cls, layer, "horizontal")
            assert row["significant"], (cls, layer)
            assert np.sign(row["ubs"]) == sign and abs(row["ubs"]) > 3
            assert row["ubs_p"] < 0.05
            assert sign * row["ubs_ci_low"] > 0 or sign * row["ubs_ci_high"] > 0
            assert (row["ubs_ci_low"] > 0) == (row["ubs_ci_high"] > 0)  # interval excludes 0
            noise = _row(table, cls, layer, "noise_00")
            assert not noise["significant"], (cls, layer)
            assert abs(noise["ubs"]) < abs(row["ubs"]) / 3


def test_measure_is_scored_as_rcv_in_the_same_report(rep):
    table = rep.to_frame()
    row = _row(table, "striped", "conv1", "row_contrast")
    assert row["r2_cv"] > 0.5 and row["br"] > 0 and row["significant"]
    assert _row(table, "other", "conv1", "row_contrast")["br"] < 0
    assert ("conv1", "row_contrast") in rep.scatter and ("conv2", "row_contrast") in rep.scatter


# --------------------------------------------------------------------------- plots
def test_plots_return_figures(rep):
    assert isinstance(rep.plot_heatmap(), Figure)
    assert isinstance(rep.plot_heatmap(layer="conv2", value="score"), Figure)
    assert isinstance(rep.plot_layer_profile(), Figure)
    assert isinstance(rep.plot_layer_profile(concept="horizontal"), Figure)
    assert isinstance(rep.plot_rcv_scatter("row_contrast", "conv1"), Figure)
    assert isinstance(rep.plot_null("striped", "conv1", "horizontal"), Figure)
    with pytest.raises(KeyError, match="row_contrast"):
        rep.plot_rcv_scatter("horizontal", "conv1")  # a folder concept has no scatter


# --------------------------------------------------------------------------- HTML and files
def test_html_is_self_contained_and_holds_the_table_and_images(rep, tmp_path):
    path = tmp_path / "out" / "page.html"
    html = rep.to_html(path)
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert text == html
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "<script src" not in lowered and "<link" not in lowered
    assert "<table" in lowered and "Planted report" in text
    for name in ("horizontal", "noise_00", "row_contrast", "striped", "other", "conv1", "conv2"):
        assert name in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 4  # two heatmaps, a layer profile, RCV scatters
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "Provenance" in text and rep.provenance["model_fingerprint"] in text


def test_save_writes_html_csv_provenance_and_figures(rep, tmp_path):
    written = rep.save(tmp_path / "saved")
    out = tmp_path / "saved"
    assert (out / "report.html").is_file() and (out / "report.csv").is_file()
    assert (out / "provenance.json").is_file()
    pngs = sorted(out.glob("figure_*.png"))
    assert len(pngs) >= 4
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert set(written.values()) >= {out / "report.html", out / "report.csv", *pngs}
    csv = pd.read_csv(out / "report.csv")
    assert list(csv.columns) == COLUMNS and len(csv) == len(rep.to_frame())
    # Saved again over an earlier page with more figures: none of those is left beside the new one;
    # a user's own files stay.
    (out / f"figure_{len(pngs) + 3:02d}.png").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    rep.save(out)
    assert sorted(out.glob("figure_*.png")) == pngs and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        rep.save(tmp_path / "afile")


# --------------------------------------------------------------------------- sanity checks
def test_findings_collapse_on_randomised_weights(rep):
    table = rep.to_frame()
    checks = {c["check"]: c for c in rep.sanity["checks"]}
    random_check = rep.sanity["checks"][0]
    assert random_check["check"] == "randomised model weights"
    assert random_check["passed"] is True and random_check["status"] == "PASS"
    assert random_check["significant_before"] == int(table["significant"].sum()) >= 4
    randomised = rep.sanity["randomised_table"]
    assert len(randomised) == len(table)
    # Random filters still see stripes, and a random head may weigh them either way, so the
    # randomised model can have significant rows of its own; what must not survive is the planted
    # finding itself, in its direction (one chance survivor among the measure rows is tolerated).
    key = ["class", "layer", "concept"]
    merged = table[table["significant"]].merge(randomised, on=key, suffixes=("", "_random"))
    same_sign = merged["significant_random"] & (np.sign(merged["ubs"]) == np.sign(merged["ubs_random"]))
    assert int(same_sign.sum()) <= 1
    assert not same_sign[merged["kind"] == "cav"].any()
    assert random_check["still_significant"] == int(same_sign.sum())
    assert "shuffled measures" in checks
    assert rep.provenance["sanity_checks"] == rep.sanity["checks"]


def test_html_reports_the_sanity_checks(rep):
    html = rep.to_html()
    assert "Sanity check (randomised model weights)" in html
    assert "Sanity check (randomised model weights): PASS" in html
    assert "Sanity check (shuffled measures)" in html


def test_report_without_sanity_has_no_sanity_section(model, data):
    rep = concepts.report(model, ["conv1"], [data / "concepts" / "horizontal"], data=data, **FAST)
    assert rep.sanity == {}
    assert "Sanity check" not in rep.to_html()
    assert len(rep.to_frame()) == 2 * 1 * 1


def test_html_and_plots_use_the_report_significance_level(model, data):
    """``significance=`` decides the table's ``significant`` column; the HTML and heatmaps must agree."""
    strict = concepts.report(model, ["conv1"], _concepts(data), data=data, significance=1e-12, **FAST)
    table = strict.to_frame()
    assert not table["significant"].any()
    assert (table["q_value"] < 0.05).any()  # would be highlighted at the default level
    html = strict.to_html()
    assert "combination is significant at q &lt; 1e-12" in html or "combination is significant at q < 1e-12" in html
    assert '<tr class="sig">' not in html
    fig = strict.plot_heatmap(layer="conv1")
    ax = [a for a in fig.axes if a.images][0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == len(table)  # every cell masked: nothing is significant at this level


def test_null_plot_shows_the_tested_statistic(rep):
    cav = rep.plot_null("striped", "conv1", "horizontal")
    assert cav.axes[0].get_xlabel() == "shift (UBS × displacement)"
    assert rep.plot_null("striped", "conv1", "horizontal", value="ubs").axes[0].get_xlabel() == "UBS"
    assert rep.plot_null("striped", "conv1", "horizontal", value="score").axes[0].get_xlabel() == "TCAV score"
    assert rep.plot_null("striped", "conv1", "row_contrast").axes[0].get_xlabel() == "Br"
    with pytest.raises(KeyError):
        rep.plot_null("striped", "conv1", "no_such_concept")


def test_score_result_draws_the_same_plots(model, data):
    result = concepts.score(model, "conv1", data / "concepts" / "horizontal", **FAST)
    assert result.plot_heatmap().axes
    assert result.plot_null("striped", "conv1", "horizontal").axes[0].get_xlabel().startswith("shift")
