"""The HTML report: self-contained, escaped, complete, ordered; and the plain-language findings."""
from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from concepts import report_html
from concepts.plots import figure_to_png_bytes, plot_heatmap

from result_tables import CLASSES, LAYERS, make_result_table  # noqa: E402
CONCEPTS = [("stripes", "cav"), ("<b>x</b>", "cav"), ("nuclei_area", "rcv")]


def make_table() -> pd.DataFrame:
    return make_result_table(CONCEPTS)


PROVENANCE = {
    "model": {"sha256": "0123abcd",
              "layers": [{"name": "zeta_conv", "d": 16}, {"name": "mid_dense", "d": 64}]},
    "target": "logit", "seeds": [0, 1, 2], "n_random": 20, "correction": "holm",
    "radiomics": {"version": "3.1.0", "params": "binWidth: 25\nsetting:\n  force2D: true"},
    "data_manifest": "https://example.org/manifest.json",
}


@pytest.fixture(scope="module")
def figures() -> dict:
    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1], [0, 1])
    # one Figure and one pre-rendered PNG: both forms must be embedded
    return {"UBS heatmap <all layers>": fig, "small png": figure_to_png_bytes(fig, dpi=40)}


@pytest.fixture(scope="module")
def page(figures) -> str:
    return report_html.render_html(make_table(), title="Demo report", figures=figures,
                                   provenance=PROVENANCE, headline="PASS: planted concept found",
                                   notes=["randomised model: all findings collapsed"])


def test_page_contains_every_name_and_the_table(page):
    for cls in CLASSES:
        assert cls in page
    for layer, _ in LAYERS:
        assert layer in page
    for concept, _ in CONCEPTS:
        assert report_html._esc(concept) in page
    assert '<table class="results"' in page
    body = page.split('<table class="results"')[1].split("</table>")[0]
    assert body.count("<tr") == 1 + len(make_table())  # header + one row per class x layer x concept
    for column in make_table().columns:
        assert f">{column}</th>" in body


def test_figures_are_embedded_as_png_data_uris(page, figures):
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(figures)
    for uri in uris:
        assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "UBS heatmap &lt;all layers&gt;" in page and "small png" in page


def test_page_is_self_contained(page):
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "<script src" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert "<script>" in page  # the sorting code is inline
    # the URL from the provenance is still shown, as text
    assert "example.org/manifest.json" in page


def test_user_strings_are_escaped(page):
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    evil = report_html.render_html(make_table().assign(layer="<script>alert(1)</script>"), title="<i>t</i>",
                                   figures={}, provenance={"<k>": "<v>"}, notes=["<n>"])
    assert "<script>alert" not in evil and "<i>t</i>" not in evil
    assert "&lt;k&gt;" in evil and "&lt;v&gt;" in evil and "&lt;n&gt;" in evil


def test_page_order_headline_summary_table_figures_provenance_howto(page):
    positions = [page.index(marker) for marker in (
        'class="headline pass"', 'id="summary"', 'id="notes"', 'id="table"', 'id="figures"',
        'id="provenance"', 'id="how-to-read"')]
    assert positions == sorted(positions)
    assert "PASS: planted concept found" in page


def test_headline_styles():
    table = make_table()
    fail = report_html.render_html(table, title="t", figures={}, provenance={}, headline="FAIL: not found")
    assert 'class="headline fail"' in fail
    plain = report_html.render_html(table, title="t", figures={}, provenance={}, headline="Demo run")
    assert 'class="headline info"' in plain
    none = report_html.render_html(table, title="t", figures={}, provenance={})
    assert 'class="headline' not in none


def test_provenance_and_how_to_read(page):
    prov = page.split('id="provenance"')[1].split('id="how-to-read"')[0]
    for key in ("model", "sha256", "0123abcd", "seeds", "correction", "holm", "radiomics", "binWidth: 25"):
        assert key in prov
    assert "<pre>" in prov  # multi-line parameters keep their layout
    howto = page.split('id="how-to-read"')[1]
    for term in ("score", "null_mean", "effect", "q_value", "UBS", "not public", "vector_quality", "r2_cv",
                 "br", "zero_fraction"):
        assert term in howto


def test_table_rows_ordered_by_class_layer_then_abs_ubs_and_significant_highlighted(page):
    table = make_table()
    body = page.split('<table class="results"')[1].split("</table>")[0]
    rows = re.findall(r"<tr( class=\"sig\")?><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>",
                      body)
    layer_rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    keys = [(CLASSES.index(c), layer_rank[la]) for _, c, la, _ in rows]
    assert keys == sorted(keys)
    for cls in CLASSES:
        for layer, _ in LAYERS:
            sub = table[(table["class"] == cls) & (table["layer"] == layer)]
            expected = sub.assign(a=sub["ubs"].abs()).sort_values("a", ascending=False, na_position="last")
            got = [con for _, c, la, con in rows if c == cls and la == layer]
            assert got == [report_html._esc(c) for c in expected["concept"]]
    assert sum(1 for sig, *_ in rows if sig) == int(table["significant"].sum())


def test_summarize_findings_orders_by_abs_ubs_and_says_raises_or_lowers():
    table = make_table()
    sentences = report_html.summarize_findings(table)
    sig = table[table["significant"]]
    assert len(sentences) == len(sig) + 1  # one per finding + the count of the rest
    strengths = sig["ubs"].abs().fillna(sig["effect"].abs())
    ordered = sig.loc[strengths.sort_values(ascending=False, kind="stable").index]
    for sentence, (_, row) in zip(sentences, ordered.iterrows()):
        assert f"Class '{row['class']}', layer '{row['layer']}'" in sentence
        assert f"'{row['concept']}'" in sentence
        assert ("raises" if row["ubs"] > 0 else "lowers") in sentence
        assert f"UBS {row['ubs']:+.1f}" in sentence
    # the strongest: tumour / mid_dense / nuclei_area, UBS -3.5, q = 0.0005
    assert sentences[0] == ("Class 'tumour', layer 'mid_dense': increasing concept 'nuclei_area' "
                            "(a continuous measure) lowers the class score (UBS -3.5, TCAV 0.06 vs null "
                            "0.50, held-out R² 0.40, q < 0.001).")
    assert "not significant" in sentences[-1]


def test_summarize_findings_example_sentence_and_effect_fallback():
    t = pd.DataFrame({"class": ["high_cellularity", "high_cellularity"], "layer": ["conv2", "conv3"],
                      "concept": ["nuclei_dense", "stripes"], "kind": ["cav", "cav"],
                      "ubs": [3.2, np.nan], "effect": [0.41, -4.0], "score": [0.91, 0.1],
                      "null_mean": [0.5, 0.5], "q_value": [0.001, 0.002], "significant": [True, True]})
    sentences = report_html.summarize_findings(t)
    # stripes has no UBS; its |effect| 4.0 ranks above nuclei_dense's |UBS| 3.2
    assert "'stripes' lowers" in sentences[0]
    assert sentences[1] == ("Class 'high_cellularity', layer 'conv2': concept 'nuclei_dense' raises the "
                            "class score (UBS +3.2, TCAV 0.91 vs null 0.50, q = 0.001).")


def test_summarize_findings_when_nothing_is_significant():
    table = make_table().assign(q_value=0.5, significant=False)
    sentences = report_html.summarize_findings(table)
    assert len(sentences) == 1 and "No" in sentences[0] and "significant" in sentences[0]
    empty = report_html.summarize_findings(table.iloc[:0])
    assert empty == ["The results table is empty: nothing was tested."]
    page = report_html.render_html(table, title="t", figures={}, provenance={})
    assert sentences[0] in html.unescape(page)


def test_bad_figure_bytes_are_refused():
    with pytest.raises(ValueError, match="PNG"):
        report_html.render_html(make_table(), title="t", figures={"svg": b"<svg/>"}, provenance={})


def test_write_html_creates_folders_and_writes_utf8(tmp_path):
    page = report_html.render_html(make_table(), title="Résumé – UBS ≥ 0", figures={}, provenance={})
    path = report_html.write_html(tmp_path / "a" / "b" / "report.html", page)
    assert path.exists() and path.read_text(encoding="utf-8") == page
    assert "Résumé – UBS ≥ 0" in path.read_text(encoding="utf-8")
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"]  # no temporary left behind


class _TagBalance(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_page_is_well_formed(page):
    parser = _TagBalance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert page.startswith("<!DOCTYPE html>")


def test_real_heatmap_embeds():
    table = make_table()
    page = report_html.render_html(table, title="t", figures={"UBS": plot_heatmap(table, layer="zeta_conv")},
                                   provenance={})
    assert page.count("data:image/png;base64,") == 1


def test_findings_warn_about_poor_vectors():
    t = pd.DataFrame({"class": ["a"], "layer": ["l"], "concept": ["c"], "kind": ["cav"], "ubs": [2.0],
                      "score": [0.7], "null_mean": [0.5], "q_value": [0.01], "vector_quality": [0.52]})
    assert "Caution: the CAV's held-out accuracy is only 0.52." in report_html.summarize_findings(t)[0]
