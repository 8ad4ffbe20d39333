"""Plain-language findings of a result table: one sentence per significant (class, layer, concept).

:func:`summarize_findings` is what the HTML page (:mod:`concepts.report_html`), ``print(result)``
and the notebooks show above the table: strongest findings first, each with its direction, its
effect and its corrected q-value, then one line for what is not significant.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from concepts.plots import is_significant
from concepts.renames import renamed

__all__ = ["summarize_findings"]


def _num(row: pd.Series, column: str) -> float:
    if column not in row.index:
        return float("nan")
    v = pd.to_numeric(pd.Series([row[column]]), errors="coerce").iloc[0]
    return float(v)


def _strength(row: pd.Series) -> float:
    ubs = _num(row, "ubs")
    if math.isfinite(ubs):
        return abs(ubs)
    eff = _num(row, "effect")
    return abs(eff) if math.isfinite(eff) else -1.0


def _sentence(row: pd.Series) -> str:
    ubs, eff = _num(row, "ubs"), _num(row, "effect")
    direction = ubs if math.isfinite(ubs) else eff
    verb = ("raises" if direction > 0 else "lowers" if direction < 0 else "leaves unchanged")
    is_rcv = str(row.get("kind", "")).lower() == "rcv"
    subject = (f"increasing concept '{row['concept']}' (a continuous measure)" if is_rcv
               else f"concept '{row['concept']}'")
    numbers = []
    if math.isfinite(ubs):
        numbers.append(f"UBS {ubs:+.1f}")
    score, null = _num(row, "score"), _num(row, "null_mean")
    if math.isfinite(score):
        numbers.append(f"TCAV {score:.2f}" + (f" vs null {null:.2f}" if math.isfinite(null) else ""))
    elif math.isfinite(eff):
        numbers.append(f"effect {eff:+.2f}")
    r2 = _num(row, "r2_cv")
    if is_rcv and math.isfinite(r2):
        numbers.append(f"held-out R\u00b2 {r2:.2f}")
    q = _num(row, "q_value")
    if math.isfinite(q):
        numbers.append("q < 0.001" if q < 0.001 else f"q = {q:.3f}")
    model = f"Model '{row['model']}', c" if "model" in row.index and isinstance(row.get("model"), str) else "C"
    text = (f"{model}lass '{row['class']}', layer '{row['layer']}': {subject} {verb} the class score"
            + (f" ({', '.join(numbers)})" if numbers else "") + ".")
    # a significant score on a vector that barely beats chance is a warning, not a finding
    quality = _num(row, "vector_quality")
    if math.isfinite(quality):
        if is_rcv and quality < 0.1:
            text += f" Caution: the RCV's held-out R\u00b2 is only {quality:.2f}."
        elif not is_rcv and quality < 0.6:
            text += f" Caution: the CAV's held-out accuracy is only {quality:.2f}."
    return text


@renamed(alpha="significance")
def summarize_findings(table: pd.DataFrame, *, significance: float = 0.05, limit: int | None = None) -> list[str]:
    """Plain sentences for the significant rows, strongest |UBS| first (|effect| where UBS is missing).

    A final sentence counts the combinations that are not significant; with no significant row
    the list is a single sentence that says so. ``limit`` caps the number of finding sentences
    (a closing sentence says how many more there are).

    Examples
    --------
    >>> t = pd.DataFrame({"class": ["tumour"], "layer": ["conv2"], "concept": ["nuclei_dense"],
    ...                   "kind": ["cav"], "ubs": [3.2], "score": [0.91], "null_mean": [0.5],
    ...                   "q_value": [0.001], "significant": [True]})
    >>> print(summarize_findings(t)[0])  # doctest: +NORMALIZE_WHITESPACE
    Class 'tumour', layer 'conv2': concept 'nuclei_dense' raises the class score
    (UBS +3.2, TCAV 0.91 vs null 0.50, q = 0.001).
    """
    n = len(table)
    if n == 0:
        return ["The results table is empty: nothing was tested."]
    sig = is_significant(table, significance)
    hits = table[sig.to_numpy()]
    if hits.empty:
        return [f"No class \u00d7 layer \u00d7 concept combination is significant at q < {significance:g} after "
                f"correction for multiple comparisons ({n} tested)."]
    strength = hits.apply(_strength, axis=1)
    # stable sort: equal strengths keep table order (class, then layer in model order)
    order = np.argsort(-strength.to_numpy(float), kind="stable")
    ordered = hits.iloc[order]
    shown = ordered if limit is None else ordered.iloc[:limit]
    sentences = [_sentence(row) for _, row in shown.iterrows()]
    if len(shown) < len(ordered):
        sentences.append(f"\u2026 and {len(ordered) - len(shown)} more significant combinations "
                         "(see the table).")
    rest = n - len(hits)
    if rest:
        sentences.append(f"{rest} of {n} combinations are not significant (q \u2265 {significance:g}).")
    return sentences
