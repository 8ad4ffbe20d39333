"""Fixed scenarios whose result tables are frozen in ``tests/golden/`` (the redesign and speed guard).

The architecture and speed work must not change any number: the same seed gives the same table.
``python tests/golden_tables.py`` rewrites the frozen tables; do that only for a change that is
meant to alter results, and say so in the commit.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).parent / "golden"
#: Columns that describe the run rather than its result (wall time, paths).
VOLATILE = {"elapsed_s"}


def _mean_intensity(image: np.ndarray) -> float:
    return float(np.asarray(image, dtype=np.float64).mean())


def _stripe_energy(image: np.ndarray) -> float:
    grey = np.asarray(image, dtype=np.float64)
    grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
    return float(np.abs(np.diff(grey, axis=0)).mean())


def scenarios(root: Path) -> dict[str, pd.DataFrame]:
    """Run every frozen scenario on synthetic data written under ``root``; tables by name."""
    import concepts
    from synthetic import build_model, make_data

    data = make_data(root / "data", n_class=16, n_concept=16, n_pool=80)
    model = build_model()
    cache = root / "cache"
    common = dict(data=data, n_random=6, seed=3, progress=False, cache_dir=cache)
    measures = [concepts.measure(_mean_intensity, name="mean_intensity"),
                concepts.measure(_stripe_energy, name="stripe_energy")]
    out: dict[str, pd.DataFrame] = {}
    out["score"] = concepts.score(model, ["conv1", "conv2"],
                                  [data / "concepts" / "horizontal", data / "concepts" / "vertical", measures[1]],
                                  **common).to_frame()
    out["score_ubs_ridge"] = concepts.score(model, "conv2", data / "concepts" / "horizontal", statistic="ubs",
                                            cav="ridge", **common).to_frame()
    out["report"] = concepts.report(model, ["conv1", "conv2"], measures=measures, **common).to_frame()
    files = sorted((data / "classes").rglob("*.png"))
    table = pd.DataFrame({"stripe_energy": [_stripe_energy(_read(f)) for f in files],
                          "mean_intensity": [_mean_intensity(_read(f)) for f in files]},
                         index=pd.Index([str(f) for f in files], name="image"))
    ranked = concepts.rank_measures(model, ["conv1", "conv2"], table, **common)
    out["rank_measures"] = ranked.to_frame() if hasattr(ranked, "to_frame") else ranked
    return out


def _read(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """The table without volatile columns, rows in a stable order, for a frozen comparison."""
    table = table.drop(columns=[c for c in table.columns if c in VOLATILE])
    keys = [c for c in ("class", "layer", "concept", "measure") if c in table.columns]
    return table.sort_values(keys, kind="stable").reset_index(drop=True) if keys else table


def write(root: Path) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, table in scenarios(root).items():
        comparable(table).to_json(GOLDEN / f"{name}.json", orient="split", double_precision=15, indent=1)


if __name__ == "__main__":
    import tempfile
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
    print("wrote", sorted(p.name for p in GOLDEN.glob("*.json")))
