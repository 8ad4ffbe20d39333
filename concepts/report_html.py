"""A self-contained HTML page for a finished concept report (its findings come from :mod:`concepts.findings`).

(Named ``report_html`` rather than ``html`` so that it never shadows the standard library's ``html``.)

The page is one file that opens offline: figures are embedded as base64 PNG data URIs, the CSS and
the few lines of JavaScript that sort the table are inline, and nothing refers to any external
URL (no CDN, no web fonts). Every string that comes from the user (class, layer and concept
names, provenance, notes) is HTML-escaped, and ``://`` inside them is written as an entity so that
even a URL quoted in the provenance is shown as text without the page containing ``http://``.

Order of the page: title, headline (e.g. a self-validation verdict), summary of the significant
findings, notes, the full results table (sortable), the figures, provenance, "How to read this".
"""
from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from concepts.plots import figure_to_png_bytes, is_significant, ordered_unique
from concepts.findings import summarize_findings
from concepts.renames import renamed

__all__ = ["HtmlPage", "render_html", "summarize_findings", "write_html"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_FINDINGS_ON_PAGE = 30  # beyond this the table is the better place to read them


# --------------------------------------------------------------------------- escaping and numbers


def _esc(value: Any) -> str:
    """HTML-escape; also neutralise ``://`` so no quoted URL appears literally (display unchanged)."""
    return html.escape(str(value), quote=True).replace("://", ":&#47;&#47;")


def _is_missing(v: Any) -> bool:
    try:
        return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))
    except TypeError:
        return False


def _fmt_p(v: float) -> str:
    if v < 0.001:
        return f"{v:.1e}"
    return f"{v:.3f}"


_THREE_DECIMALS = {"score", "score_ci_low", "score_ci_high", "null_mean", "effect", "effect_ci_low",
                   "effect_ci_high", "vector_quality", "r2_cv", "zero_fraction", "br"}
_TWO_DECIMALS = {"ubs", "ubs_ci_low", "ubs_ci_high"}
_P_COLUMNS = {"p_value", "q_value", "ubs_p"}


def _fmt_cell(column: str, v: Any) -> tuple[str, str]:
    """(text shown, sort key) for one table cell; the sort key is numeric where the value is."""
    if _is_missing(v):
        return "\u2013", ""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), ("1" if v else "0")
    if isinstance(v, Integral):
        return str(int(v)), str(int(v))
    if isinstance(v, Real):
        x = float(v)
        if not math.isfinite(x):
            return str(x), ""
        if column in _P_COLUMNS:
            text = _fmt_p(x)
        elif column in _TWO_DECIMALS:
            text = f"{x:+.2f}"
        elif column in _THREE_DECIMALS:
            text = f"{x:.3f}"
        elif column == "fold_angle_deg":
            text = f"{x:.1f}"
        elif x.is_integer() and abs(x) < 1e15:
            text = str(int(x))  # integer columns that became float because of a NaN
        else:
            text = f"{x:.4g}"
        return text, repr(x)
    return str(v), str(v)


# --------------------------------------------------------------------------- page parts


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.3em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.headline { font-size: 1.1em; padding: 0.7em 1em; border-radius: 6px; border: 1px solid #ccc;
            background: #f4f4f4; }
.headline.pass { background: #e6f4ea; border-color: #34a853; color: #155724; }
.headline.fail { background: #fdecea; border-color: #d93025; color: #721c24; }
ul.findings li { margin-bottom: 0.3em; }
.tablewrap { overflow-x: auto; max-height: 70vh; border: 1px solid #ddd; }
table.results { border-collapse: collapse; font-size: 0.82em; white-space: nowrap; }
table.results th, table.results td { padding: 3px 7px; border-bottom: 1px solid #eee; text-align: right; }
table.results td.text { text-align: left; }
table.results th { position: sticky; top: 0; background: #f0f0f0; cursor: pointer; user-select: none; }
table.results th:hover { background: #e2e2e2; }
table.results th.asc::after { content: " \\25B2"; }
table.results th.desc::after { content: " \\25BC"; }
table.results tr.sig td { background: #fff4d6; font-weight: 600; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.3em; }
dl.prov { margin: 0.3em 0 0.3em 0; }
dl.prov dt { font-weight: 600; margin-top: 0.4em; }
dl.prov dd { margin-left: 1.5em; }
table.prov { border-collapse: collapse; font-size: 0.9em; }
table.prov th, table.prov td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
.howto dt { font-weight: 600; margin-top: 0.5em; }
.muted { color: #666; font-size: 0.9em; }
"""

# Sort a table by the clicked column; numeric where every key parses as a number, blanks last.
_JS = """
document.querySelectorAll("table.results th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    var key = function (r) { return r.cells[col].getAttribute("data-v"); };
    var numeric = rows.every(function (r) { var k = key(r); return k === "" || !isNaN(parseFloat(k)); });
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_HOW_TO_READ = [
    ("score", "TCAV score: the fraction of the class's examples whose class score increases when "
              "the activation moves along the concept vector (positive directional derivative). "
              "Averaged over the random runs; 0.5 means no preference."),
    ("null_mean", "The mean TCAV score of random-vs-random vectors: what the score looks like when "
                  "there is no concept at all. Compare score with null_mean, not with 0.5."),
    ("effect", "score \u2212 null_mean, with a bootstrap confidence interval (effect_ci_low, "
               "effect_ci_high)."),
    ("p_value, q_value, significant", "p_value: two-sided t prediction test of whether the concept's "
     "statistic over its runs (test_statistic: its mean shift by default, or its UBS, or its TCAV score) "
     "could be one more random set's: the null is the same statistic of each random set against the "
     "others (Welch's t-test of concept runs against random runs with compat='tcav'). q_value: p "
     "corrected for multiple comparisons "
     "across every class \u00d7 layer \u00d7 concept of this report. A row is significant (highlighted) "
     "when q is below the significance level."),
    ("ubs, ubs_p", "UBS (unit-ball sensitivity): the mean, over the class's examples, of the "
     "directional derivative along the concept vector divided by the typical derivative along a "
     "random unit direction of the same layer. It is signed (positive: the concept raises the class "
     "score), about 0 for a random direction, and divides out the layer's nominal width (a random "
     "direction's typical derivative shrinks as 1/sqrt(width)); redundant channels still count as "
     "width (duplicating every channel multiplies UBS by sqrt(2)), so compare layers by significance "
     "first. UBS was introduced by Yeche, Harrison and Berthier (iMIMIC 2019), but the original "
     "formula is not public: this is this toolkit's reconstruction. ubs_p compares it with uniformly "
     "random directions of the layer: any direction in which the images vary (a concept's or a random "
     "set's) tends to beat those, so ubs_p is not a concept test; use p_value / q_value."),
    ("vector_quality", "How well the concept vector was learnt, on held-out data: the CAV's "
     "classification accuracy (0.5 = chance) or the RCV's cross-validated R\u00b2 (0 = no better than "
     "the mean). A significant score on a poor vector deserves little trust."),
    ("r2_cv, fold_angle_deg", "For RCVs only: the cross-validated (held-out) R\u00b2 of the regression of "
     "the concept measure on the layer's activations, and the angle between RCVs fitted on different "
     "folds (tens of degrees means the direction is not stable)."),
    ("br", "For RCVs only: bidirectional relevance, held-out R\u00b2 \u00b7 mean(S) / std(S) over the "
     "class's examples, S being the directional derivative along the RCV. Positive: increasing the "
     "measure pushes towards the class; negative: away from it."),
    ("zero_fraction", "The fraction of class examples whose directional derivative is exactly 0 "
     "(typically dead ReLU units). They count as neither positive nor negative; a large fraction "
     "makes the TCAV score less informative."),
    ("layer", "The probed layer, as a path ('outer/inner' for layers of nested models such as a "
              "backbone inside a classification head). Every layer of a model, its shape and the suggested "
              "probe points (the ends of blocks and stages) are listed by concepts.layers(model) in Python "
              "or 'concepts layers MODEL_FILE' on the command line."),
    ("d, n_examples, n_random, target, seed", "Layer width, number of class examples, number of "
     "random runs, the quantity differentiated (logit by default) and the random seed."),
]


def _headline_html(headline: str | None) -> str:
    if not headline:
        return ""
    start = headline.lstrip().upper()
    kind = "pass" if start.startswith("PASS") else "fail" if start.startswith("FAIL") else "info"
    return f'<p class="headline {kind}" id="headline">{_esc(headline)}</p>\n'


def _sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by class (table order), layer (model order), then |UBS| descending, NaN last."""
    if table.empty:
        return table
    keys = pd.DataFrame(index=table.index)
    for col in ("class", "layer"):
        if col in table:
            rank = {v: i for i, v in enumerate(ordered_unique(table[col]))}
            keys[col] = table[col].map(rank)
    if "ubs" in table:
        keys["ubs"] = -pd.to_numeric(table["ubs"], errors="coerce").abs()
    if keys.columns.empty:
        return table
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return table.loc[order]


def _table_html(table: pd.DataFrame, significance: float) -> str:
    ordered = _sorted_table(table)
    sig = is_significant(ordered, significance) if not ordered.empty else pd.Series(dtype=bool)
    is_num, is_bool = pd.api.types.is_numeric_dtype, pd.api.types.is_bool_dtype
    text_columns = {c for c in ordered.columns if not is_num(ordered[c]) or is_bool(ordered[c])}
    head = "".join(f'<th title="click to sort">{_esc(c)}</th>' for c in ordered.columns)
    lines = []
    for idx, row in ordered.iterrows():
        cells = []
        for c in ordered.columns:
            text, key = _fmt_cell(str(c), row[c])
            cls = ' class="text"' if c in text_columns else ""
            cells.append(f'<td{cls} data-v="{_esc(key)}">{_esc(text)}</td>')
        row_cls = ' class="sig"' if bool(sig.loc[idx]) else ""
        lines.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    body = "\n".join(lines)
    return ('<div class="tablewrap"><table class="results" id="results-table">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>\n")


def _png_bytes(caption: str, figure: Figure | bytes) -> bytes:
    if isinstance(figure, Figure):
        return figure_to_png_bytes(figure)
    if isinstance(figure, (bytes, bytearray, memoryview)):
        data = bytes(figure)
        if not data.startswith(_PNG_MAGIC):
            raise ValueError(f"figure {caption!r} is bytes but not a PNG image; pass a matplotlib "
                             "Figure or PNG bytes (figure_to_png_bytes)")
        return data
    raise TypeError(f"figure {caption!r} is a {type(figure).__name__}; pass a matplotlib Figure or "
                    "PNG bytes")


def _figures_html(figures: Mapping[str, Figure | bytes]) -> str:
    parts = []
    for caption, figure in figures.items():
        encoded = base64.b64encode(_png_bytes(caption, figure)).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{_esc(caption)}">'
                     f"<figcaption>{_esc(caption)}</figcaption></figure>")
    return "\n".join(parts) + "\n"


def _scalar_html(v: Any) -> str:
    if _is_missing(v):
        return '<span class="muted">\u2013</span>'
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float) and not v.is_integer():
        return _esc(f"{v:.6g}")
    text = str(v)
    if "\n" in text:  # YAML parameter files, tracebacks: keep their layout
        return f"<pre>{_esc(text)}</pre>"
    return _esc(text)


def _provenance_html(value: Any, depth: int = 0) -> str:
    """Nested dicts become definition lists, lists of records tables, other lists bullet lists."""
    if depth > 20:  # a self-referencing structure must not recurse forever
        return _esc(repr(value))
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">(empty)</span>'
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_provenance_html(v, depth + 1)}</dd>"
                        for k, v in value.items())
        return f'<dl class="prov">{items}</dl>'
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        seq = list(value)
        if not seq:
            return '<span class="muted">(none)</span>'
        if all(isinstance(v, Mapping) for v in seq):
            columns = ordered_unique(k for v in seq for k in v)
            if all(not isinstance(v.get(c), (Mapping, list, tuple)) for v in seq for c in columns):
                head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
                rows = "".join("<tr>" + "".join(f"<td>{_scalar_html(v.get(c))}</td>" for c in columns)
                               + "</tr>" for v in seq)
                return f'<table class="prov"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        if all(not isinstance(v, (Mapping, list, tuple, set)) for v in seq) and len(seq) <= 12:
            return ", ".join(_scalar_html(v) for v in seq)
        return "<ul>" + "".join(f"<li>{_provenance_html(v, depth + 1)}</li>" for v in seq) + "</ul>"
    if isinstance(value, pd.DataFrame):
        return _provenance_html(value.to_dict(orient="records"), depth + 1)
    return _scalar_html(value)


def _how_to_read_html(significance: float) -> str:
    items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in _HOW_TO_READ)
    note = ("Colour scales in the figures are centred at the null (0 for UBS and effect, 0.5 for the TCAV "
            f"score). Hatched, faded cells and hollow points are not significant (q \u2265 {significance:g}); their "
            "values are shown all the same.")
    return f'<dl class="howto">{items}</dl>\n<p class="muted">{_esc(note)}</p>\n'


# --------------------------------------------------------------------------- public API


@renamed(alpha="significance")
def render_html(table: pd.DataFrame, *, title: str, figures: Mapping[str, Figure | bytes] | None = None,
                provenance: Mapping[str, Any] | None = None, headline: str | None = None,
                notes: list[str] | None = None, significance: float = 0.05,
                sections: Mapping[str, str] | None = None) -> str:
    """One self-contained HTML document for a results table, its figures and its provenance.

    ``figures`` maps a caption to a matplotlib Figure or PNG bytes (embedded as data URIs);
    ``provenance`` may nest dicts and lists; ``headline`` is shown first and styled green/red when
    it starts with "PASS"/"FAIL". Significance uses ``q_value < significance`` (see
    :func:`concepts.plots.is_significant`). ``sections`` maps a heading to an HTML fragment shown
    after the figures; the caller builds the fragment and escapes every user string in it.

    Examples
    --------
    >>> from concepts.plots import plot_heatmap
    >>> page = render_html(report.to_frame(), title="Demo report",
    ...                    figures={"UBS by layer": plot_heatmap(report.to_frame())},
    ...                    provenance={"model": {"sha256": "ab12..."}, "seed": 0},
    ...                    headline="PASS: the planted concept was found")
    >>> page.startswith("<!DOCTYPE html>"), "PASS: the planted concept was found" in page
    (True, True)
    >>> write_html("out/report.html", page).is_file()
    True
    """
    figures = figures or {}
    findings = summarize_findings(table, significance=significance, limit=_MAX_FINDINGS_ON_PAGE)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        _headline_html(headline),
        '<section id="summary"><h2>Significant findings</h2>',
        '<ul class="findings">' + "".join(f"<li>{_esc(s)}</li>" for s in findings) + "</ul>",
        "</section>",
    ]
    if notes:
        parts += ['<section id="notes"><h2>Notes</h2>',
                  "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>", "</section>"]
    n_classes = len(ordered_unique(table["class"])) if "class" in table else 0
    n_concepts = len(ordered_unique(table["concept"])) if "concept" in table else 0
    if "model" in table and "layer" in table:
        # A comparison: each model has its own layers.
        per_model = [f"{len(ordered_unique(rows['layer']))} in {model!r}"
                     for model, rows in table.groupby("model", sort=False)]
        layers_text = f"layers ({', '.join(per_model)})"
        order = "ordered by class, layer (each model's in its order)"
    else:
        layers_text = f"{len(ordered_unique(table['layer'])) if 'layer' in table else 0} layer(s)"
        order = "ordered by class, layer (model order)"
    parts += [
        '<section id="table"><h2>Results table</h2>',
        '<p class="muted">' + _esc(f"{len(table)} rows: {n_classes} class(es) \u00d7 {layers_text} "
                                   f"\u00d7 {n_concepts} concept(s), {order} "
                                   f"and |UBS|. Highlighted rows are significant (q < {significance:g}). Click a "
                                   "column header to sort by it.") + "</p>",
        _table_html(table, significance),
        "</section>",
    ]
    if figures:
        parts += ['<section id="figures"><h2>Figures</h2>', _figures_html(figures), "</section>"]
    for i, (heading, fragment) in enumerate((sections or {}).items()):
        parts += [f'<section id="extra-{i + 1}"><h2>{_esc(heading)}</h2>', fragment, "</section>"]
    parts += [
        '<section id="provenance"><h2>Provenance</h2>',
        _provenance_html(dict(provenance)) if provenance else '<p class="muted">(none recorded)</p>',
        "</section>",
        '<section id="how-to-read"><h2>How to read this</h2>',
        _how_to_read_html(significance),
        "</section>",
        f"<script>{_JS}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(path: str | os.PathLike, html: str) -> Path:
    """Write ``html`` to ``path`` as UTF-8, creating parent folders; returns the path.

    The file is written to a temporary name and renamed, so a reader never sees half a page.

    Examples
    --------
    >>> path = write_html("report_demo/report.html", "<!DOCTYPE html><p>hi</p>")
    >>> path.as_posix(), path.read_text(encoding="utf-8")
    ('report_demo/report.html', '<!DOCTYPE html><p>hi</p>')
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a report is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class HtmlPage:
    """``to_html`` and ``save`` of a result shown as one page: :class:`concepts.Report`, :class:`concepts.Comparison`.

    A subclass says what its page holds (:meth:`_page`: the keywords of :func:`render_html` other than
    ``figures``), which tables it writes as CSV (:meth:`_csv_files`), which records as JSON
    (:meth:`_json_files`), its figures (``figures()``) and the page's file name (``_page_name``).

    Examples
    --------
    >>> page = report.to_html("out/report.html", figures={})  # save("out/") adds the CSV, JSON and figures
    >>> Path("out/report.html").read_text(encoding="utf-8") == page
    True
    """

    _page_name = "report"

    def figures(self) -> dict[str, Any]:  # pragma: no cover - every page defines its figures
        raise NotImplementedError

    def _page(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _csv_files(self) -> dict[str, tuple[str, pd.DataFrame]]:  # pragma: no cover
        raise NotImplementedError

    def _json_files(self) -> dict[str, tuple[str, Any]]:
        return {}

    def to_html(self, path: str | os.PathLike | None = None, *, figures: Mapping[str, Any] | None = None) -> str:
        """Render the self-contained HTML page; write it to ``path`` when given. Returns the HTML.

        ``figures`` (caption -> Figure or PNG bytes) defaults to ``figures()``.
        """
        figures = self.figures() if figures is None else figures
        page = render_html(figures=figures, **self._page())
        if path is not None:
            write_html(path, page)
        return page

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write the page (``<name>.html``), its tables as CSV, its records as JSON and every figure as PNG.

        Saving again into the same folder replaces them; figure files of an earlier save beyond this
        page's figures (``figure_NN.png``) are removed, so no stale figure sits beside the new page.
        Everything is rendered before the first file is written: a failure leaves the folder as it was.

        Returns ``{what: path}``: the tables' names, ``"html"``, the records' names, then each figure's caption.
        """
        import json
        import re

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"Cannot save into {str(out)!r}: it is a file. Give a folder (new or existing).")
        # Rendered to PNG once: the same bytes go into the HTML and into the figure files.
        figures = {caption: figure_to_png_bytes(fig) for caption, fig in self.figures().items()}
        page = self.to_html(figures=figures)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("figure_*.png"):
            number = re.fullmatch(r"figure_(\d{2,})\.png", old.name)
            if number and int(number.group(1)) > len(figures):
                old.unlink()
        written: dict[str, Path] = {}
        for key, (filename, frame) in self._csv_files().items():
            written[key] = out / filename
            frame.to_csv(written[key], index=False)
        written["html"] = write_html(out / f"{self._page_name}.html", page)
        for key, (filename, record) in self._json_files().items():
            written[key] = out / filename
            written[key].write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        for i, (caption, png_bytes) in enumerate(figures.items()):
            written[caption] = out / f"figure_{i + 1:02d}.png"
            written[caption].write_bytes(png_bytes)
        return written
