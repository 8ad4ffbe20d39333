"""A deterministic, hand-made result table (the shape concepts.report produces) for plot and HTML tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

LAYERS = [("zeta_conv", 16), ("alpha_conv", 32), ("mid_dense", 64)]  # model order, not alphabetical
CLASSES = ["tumour", "normal"]


def make_result_table(concepts: list[tuple[str, str]]) -> pd.DataFrame:
    """2 classes x 3 layers x 3 concepts; deterministic, some significant, a few NaNs."""
    rows = []
    k = 0
    for cls in CLASSES:
        for layer, d in LAYERS:
            for concept, kind in concepts:
                tumour = cls == "tumour"
                ubs = [3.2, -1.1, 0.4, -2.7, 0.9, 1.8, -0.2, 2.4, -3.5][k % 9] * (1 if tumour else -0.5)
                score = float(np.clip(0.5 + ubs / 8, 0, 1))
                q = [0.001, 0.30, 0.04, 0.002, 0.60, 0.01, 0.90, 0.03, 0.0005][k % 9] * (1 if tumour else 3)
                rows.append({
                    "class": cls, "layer": layer, "concept": concept, "kind": kind,
                    "score": score, "score_ci_low": score - 0.05, "score_ci_high": score + 0.05,
                    "null_mean": 0.5, "effect": score - 0.5, "effect_ci_low": score - 0.56,
                    "effect_ci_high": score - 0.44, "p_value": q / 5, "q_value": q, "significant": q < 0.05,
                    "vector_quality": 0.85 if kind == "cav" else 0.4, "n_examples": 40, "n_random": 20,
                    "target": "logit", "seed": 0, "zero_fraction": 0.0, "d": d, "ubs": ubs,
                    "ubs_ci_low": ubs - 0.6, "ubs_ci_high": ubs + 0.6, "ubs_p": q,
                    "r2_cv": 0.4 if kind == "rcv" else np.nan,
                    "fold_angle_deg": 11.0 if kind == "rcv" else np.nan,
                    "br": 0.3 if kind == "rcv" else np.nan,
                })
                k += 1
    table = pd.DataFrame(rows)
    table.loc[4, "ubs"] = np.nan
    return table
