"""The report shows, per significant concept, the cases it drives most and least, with their maps.

On the planted-concept model of ``synthetic.py`` the concept ``horizontal`` is significant for both
classes; its figures and tables must appear in the HTML page and the console, the page must escape
a concept name that looks like HTML, and drawing them must not run any image through the model again.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.report_examples import driven_examples_text, driven_rows  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402

NAME = "<b>horizontal</b>"


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    data = make_data(tmp_path_factory.mktemp("report_examples"), n_class=12, n_concept=12, n_pool=60)
    return concepts.report(build_model(), ["conv1", "conv2"], {NAME: data / "concepts" / "horizontal"}, data=data,
                           n_random=5, n_directions=100, progress=False, cache_dir=False)


def test_significant_concepts_get_example_figures_without_a_model_pass(rep):
    rows = driven_rows(rep)
    assert {(cls, concept) for cls, concept, _ in rows} == {("striped", NAME), ("other", NAME)}
    engine = rep._context.engine
    before = engine.n_batches_run
    figures = rep.figures()
    assert engine.n_batches_run == before  # maps and per-example rows come from the scoring pass
    captions = [c for c in figures if "most (top) and least (bottom) driven" in c]
    assert len(captions) == 2
    lines = driven_examples_text(rep)
    assert len(lines) == 2 and all("most driven s" in line or "most driven o" in line for line in lines)


def test_html_lists_the_cases_and_escapes_names(rep, tmp_path):
    written = rep.save(tmp_path / "out")
    page = written["html"].read_text(encoding="utf-8")
    assert "Cases most and least driven by each significant concept" in page
    assert "most driven" in page and "least driven" in page
    assert NAME not in page and "&lt;b&gt;horizontal&lt;/b&gt;" in page
    assert page.count("data:image/png;base64,") >= 4  # heatmaps, profile and the two example figures


def test_cli_report_prints_the_most_and_least_driven_cases(tmp_path, monkeypatch, capsys):
    from concepts.cli import main

    monkeypatch.setenv("CONCEPTS_CACHE_DIR", str(tmp_path / "cache"))
    data = make_data(tmp_path / "data", n_class=10, n_concept=10, n_pool=40)
    model_file = tmp_path / "m.keras"
    build_model().save(model_file)
    code = main(["report", str(data), "--model", str(model_file), "--layers", "conv1", "--concepts", "horizontal",
                 "--out", str(tmp_path / "out"), "--n-random", "4", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cases most and least driven by each significant concept" in printed
    assert "horizontal in conv1, class striped: most driven s0" in printed
