"""Figures of the report: panels, labels, colour scales centred at the null, masking, layer order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from concepts import plots
from probes.errors import UnknownLayerError

# model order on purpose not alphabetical, so a sort would show
from result_tables import CLASSES, LAYERS, make_result_table  # noqa: E402
CONCEPTS = [("stripes", "cav"), ("dots", "cav"), ("nuclei_area_with_a_rather_long_name", "rcv")]


def make_table() -> pd.DataFrame:
    return make_result_table(CONCEPTS)


def _panels(fig: Figure) -> list:
    """Axes that are data panels (the colour bar's axes has no images of its own)."""
    return [ax for ax in fig.axes if ax.images or ax.collections or ax.lines]


def _heatmap_panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_heatmap_one_layer_has_one_panel_a_colourbar_and_labels():
    table = make_table()
    fig = plots.plot_heatmap(table, layer="alpha_conv", value="ubs")
    assert isinstance(fig, Figure)
    panels = _heatmap_panels(fig)
    assert len(panels) == 1 and len(fig.axes) == 2  # the panel and its colour bar
    ax = panels[0]
    assert ax.get_xlabel() == "concept" and ax.get_ylabel() == "class"
    assert "alpha_conv" in ax.get_title()
    colourbar_ax = next(a for a in fig.axes if a is not ax)
    assert "UBS" in colourbar_ax.get_ylabel()
    ticks = [t.get_text().replace("\n", "") for t in ax.get_xticklabels()]
    assert ticks == [c for c, _ in CONCEPTS]  # full names, wrapped but not truncated
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES


@pytest.mark.parametrize("value, centre", [("ubs", 0.0), ("effect", 0.0), ("score", 0.5)])
def test_heatmap_colour_scale_is_centred_at_the_null(value, centre):
    fig = plots.plot_heatmap(make_table(), layer="zeta_conv", value=value)
    norm = _heatmap_panels(fig)[0].images[0].norm
    assert norm.vcenter == pytest.approx(centre)
    # symmetric around the null: equal distances get equally strong colours
    assert norm.vmax - centre == pytest.approx(centre - norm.vmin)


def test_heatmap_all_layers_share_one_colour_scale_and_keep_model_order():
    table = make_table()
    fig = plots.plot_heatmap(table)  # layer=None: one panel per layer
    panels = _heatmap_panels(fig)
    assert len(panels) == 3 and len(fig.axes) == 4
    assert [p.get_title().split()[1] for p in panels] == [name for name, _ in LAYERS]
    norms = {(p.images[0].norm.vmin, p.images[0].norm.vmax) for p in panels}
    assert len(norms) == 1
    vmax = norms.pop()[1]
    assert vmax == pytest.approx(np.nanmax(np.abs(table["ubs"])))


def test_heatmap_masks_non_significant_cells_but_prints_their_values():
    table = make_table()
    layer = "zeta_conv"
    fig = plots.plot_heatmap(table, layer=layer, value="ubs")
    ax = _heatmap_panels(fig)[0]
    texts = [t.get_text() for t in ax.texts]
    sub = table[table["layer"] == layer]
    not_sig = sub[~sub["significant"]]
    assert len(not_sig) >= 2
    for v in not_sig["ubs"]:
        assert (f"{v:+.2f}" if np.isfinite(v) else "n/a") in texts
    for v in sub.loc[sub["significant"], "ubs"]:
        assert f"{v:+.2f}" in texts
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert len(hatched) == len(not_sig)
    legend_texts = " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
    assert "not significant" in legend_texts and "hatched" in legend_texts


def test_heatmap_significance_changes_what_is_masked():
    table = make_table()
    strict = plots.plot_heatmap(table, layer="zeta_conv", significance=0.0001)
    hatched = [p for p in _heatmap_panels(strict)[0].patches if p.get_hatch()]
    assert len(hatched) == 6  # nothing passes q < 0.0001: every cell is masked


def test_former_alpha_keyword_for_a_level_warns_and_gives_the_same_figure():
    table = make_table()
    with pytest.warns(FutureWarning, match=r"alpha= is now called significance="):
        old = plots.plot_heatmap(table, layer="zeta_conv", alpha=0.0001)
    hatched = [p for p in _heatmap_panels(old)[0].patches if p.get_hatch()]
    assert len(hatched) == 6
    with pytest.warns(FutureWarning, match="significance="):
        assert plots.is_significant(table, alpha=0.0001).tolist() == plots.is_significant(
            table, significance=0.0001).tolist()
    with pytest.raises(TypeError, match="only significance="):
        plots.plot_layer_profile(table, alpha=0.01, significance=0.01)


def test_heatmap_rejects_unknown_layer_and_value():
    table = make_table()
    with pytest.raises(UnknownLayerError, match="zeta_conv"):
        plots.plot_heatmap(table, layer="nope")
    with pytest.raises(ValueError, match="ubs"):
        plots.plot_heatmap(table, value="banana")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_heatmap(table.iloc[:0])


def test_layer_profile_panels_labels_and_layer_order():
    table = make_table()
    fig = plots.plot_layer_profile(table)  # one panel per concept
    panels = _panels(fig)
    assert len(panels) == 3 == len(fig.axes)
    for ax, (concept, kind) in zip(panels, CONCEPTS):
        assert concept in ax.get_title().replace("\n", "")
        assert ax.get_xlabel().startswith("layer") and "UBS" in ax.get_ylabel()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [name for name, _ in LAYERS]  # table order, not alphabetical
        assert ticks != sorted(ticks)


@pytest.mark.parametrize("value, null", [("ubs", 0.0), ("score", 0.5), ("effect", 0.0)])
def test_layer_profile_null_line_error_bars_and_hollow_points(value, null):
    table = make_table()
    fig = plots.plot_layer_profile(table, concept="stripes", value=value)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    null_lines = [ln for ln in ax.lines if np.allclose(ln.get_ydata(), null) and ln.get_linestyle() == "--"]
    assert null_lines, "a dashed horizontal line at the null"
    # error bars: one LineCollection per class
    assert sum(type(c).__name__ == "LineCollection" for c in ax.collections) == len(CLASSES)
    sub = table[table["concept"] == "stripes"]
    points = [c for c in ax.collections if type(c).__name__ == "PathCollection"]
    white = np.array(to_rgba("white"))
    hollow = sum(len(c.get_offsets()) for c in points
                 if len(c.get_offsets()) and np.allclose(c.get_facecolors()[0], white))
    filled = sum(len(c.get_offsets()) for c in points
                 if len(c.get_offsets()) and not np.allclose(c.get_facecolors()[0], white))
    assert filled == int(sub["significant"].sum())
    assert hollow == int((~sub["significant"]).sum())


def test_rcv_scatter_shows_fit_and_held_out_r2():
    rng = np.random.default_rng(0)
    measure = rng.normal(size=50)
    data = pd.DataFrame({"measure": measure, "projection": 2.0 * measure + 1.0})
    fig = plots.plot_rcv_scatter(data, concept="nuclei_area", layer="alpha_conv", r2_cv=0.734)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert "held-out R²" in ax.get_title() and "0.73" in ax.get_title()
    assert "nuclei_area" in ax.get_xlabel() and "projection" in ax.get_ylabel()
    fit = [ln for ln in ax.lines if len(ln.get_xdata()) > 2][0]
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    assert np.allclose(y, 2.0 * x + 1.0)  # the least-squares line of an exact linear relation
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "held-out R²" in legend


def test_rcv_scatter_tolerates_nan_r2_and_missing_values():
    data = pd.DataFrame({"measure": [1.0, 2.0, np.nan, 4.0], "projection": [1.0, 2.5, 3.0, 3.9]})
    fig = plots.plot_rcv_scatter(data, concept="c", layer="l", r2_cv=float("nan"))
    assert "n/a" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="projection"):
        plots.plot_rcv_scatter(data[["measure"]], concept="c", layer="l", r2_cv=0.1)


def test_null_distribution_figure():
    fig = plots.plot_null_distribution([0.8, 0.85, 0.9, 0.75], [0.5, 0.45, 0.55, 0.52, 0.48],
                                       title="tumour / zeta_conv / stripes", p_value=0.003)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "TCAV score" and ax.get_ylabel()
    assert "stripes" in ax.get_title() and "p = 0.003" in ax.get_title()
    legend = " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
    assert "concept vs random: n = 4" in legend and "random vs random (null): n = 5" in legend


def test_figure_to_png_bytes():
    png = plots.figure_to_png_bytes(plots.plot_heatmap(make_table(), layer="mid_dense", value="score"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_wrap_label_never_truncates():
    name = "block3_conv2_nuclei_area_glcm_contrast"
    wrapped = plots.wrap_label(name, 10)
    assert "\n" in wrapped and wrapped.replace("\n", "") == name
    assert plots.wrap_label("short") == "short"


def test_is_significant_uses_q_and_the_level_with_fallback():
    t = pd.DataFrame({"q_value": [0.01, 0.2, np.nan], "significant": [True, True, True]})
    assert plots.is_significant(t).tolist() == [True, False, True]
    assert plots.is_significant(t, significance=0.005).tolist() == [False, False, True]
    assert plots.ordered_unique(["b", "a", "b", "c"]) == ["b", "a", "c"]


def test_br_plots_leave_out_concepts_without_values():
    table = make_table()  # Br is NaN for the two CAV concepts
    fig = plots.plot_heatmap(table, layer="zeta_conv", value="br")
    ticks = [t.get_text().replace("\n", "") for t in _heatmap_panels(fig)[0].get_xticklabels()]
    assert ticks == ["nuclei_area_with_a_rather_long_name"]
    assert len(plots.plot_layer_profile(table, value="br").axes) == 1


def test_heatmap_missing_value_is_na_and_not_hatched():
    table = make_table()  # row 4: class tumour, layer alpha_conv, concept dots, ubs NaN
    ax = _heatmap_panels(plots.plot_heatmap(table, layer="alpha_conv"))[0]
    assert "n/a" in [t.get_text() for t in ax.texts]
    sub = table[table["layer"] == "alpha_conv"]
    not_sig_with_value = (~sub["significant"] & sub["ubs"].notna()).sum()
    assert len([p for p in ax.patches if p.get_hatch()]) == not_sig_with_value
