"""The validation study that chooses the default CAV estimator, test statistic and number of random sets.

Run from the repository root::

    .venv/bin/python -m benchmarks.validation            # full study, writes docs/validation.md + figure
    .venv/bin/python -m benchmarks.validation --small    # minutes: smaller sets, fewer settings

For every planted case of :mod:`benchmarks.planted` (known answer per class x concept, in every
layer) and every combination of CAV estimator x test statistic x number of random sets, it runs
:func:`concepts.score` exactly as a user would and measures

* **signs** -- share of planted (class, layer, concept) cells whose direction is right (the sign
  of ``ubs``, the consensus vector's UBS, for the ``shift`` and ``ubs`` statistics; of ``effect``
  for the sign-count score);
* **power** -- share of planted cells that are significant after correction *and* right;
* **wrong** -- planted cells significant in the wrong direction (must be 0);
* **fpr** -- share of noise-concept rows (concepts drawn from the random images' distribution)
  with an uncorrected p-value below 0.05 (must stay at or below the nominal 5 %, within binomial
  error).

The activations are computed once per case (content-addressed cache); each setting then costs
its CAV fits and statistics, whose time is reported too.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.planted import PlantedCase, make_case

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("ridge", "mean", "logistic", "svm")
STATISTICS = ("shift", "ubs", "score")


def evaluate(case: PlantedCase, table: pd.DataFrame, statistic: str) -> dict[str, Any]:
    """Signs, power, wrong-way findings and false-positive rate of one result table.

    Example:
        >>> evaluate(case, result.to_frame(), "ubs")["signs"]  # doctest: +SKIP
        1.0
    """
    keys = list(zip(table["class"], table["concept"]))
    planted = table[[k in case.expected for k in keys]]
    expected = np.array([case.expected[(c, k)] for c, k in zip(planted["class"], planted["concept"])])
    direction = np.sign(planted["effect"] if statistic == "score" else planted["ubs"]).to_numpy()
    right = direction == expected
    significant = planted["significant"].to_numpy(bool)
    noise = table[table["concept"].isin(case.noise_concepts)]
    per_layer = {layer: float(np.mean(right[(planted["layer"] == layer).to_numpy()])) for layer in case.layers}
    return {"signs": float(right.mean()), "power": float((right & significant).mean()),
            "wrong": int((~right & significant).sum()), "n_planted": int(len(planted)),
            "fpr": float((noise["p_value"] < 0.05).mean()), "n_noise": int(len(noise)),
            "signs_per_layer": per_layer}


def run_setting(case: PlantedCase, method: str, statistic: str, n_random: int, cache: Path,
                seed: int = 0) -> dict[str, Any]:
    """One :func:`concepts.score` call on a case; its metrics and time."""
    import concepts

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = concepts.score(case.model, case.layers, [str(c) for c in case.concepts], data=case.data,
                                n_random=n_random, cav=method, statistic=statistic, seed=seed,
                                cache_dir=cache, progress=False, robustness=False)
    seconds = time.perf_counter() - start
    return {"case": case.name, "method": method, "statistic": statistic, "n_random": n_random,
            "seconds": seconds, **evaluate(case, result.to_frame(), statistic)}


def run_study(work: Path, size: str, methods=METHODS, statistics=STATISTICS, randoms=(10, 20, 50, 100),
              cases=("lesion", "lesion_nested", "stripes"), log=print) -> pd.DataFrame:
    """Every setting on every case; returns one row per (case, method, statistic, n_random)."""
    rows = []
    for name in cases:
        case = make_case(name, work, size=size)
        # Warm the activation cache once so that the first setting's time is not the engine's.
        run_setting(case, methods[0], statistics[0], min(randoms), work / "cache")
        for n_random in randoms:
            for method in methods:
                for statistic in statistics:
                    row = run_setting(case, method, statistic, n_random, work / "cache")
                    log(f"{name:14s} {method:9s} {statistic:5s} R={n_random:<4d} signs={row['signs']:.2f} "
                        f"power={row['power']:.2f} wrong={row['wrong']} fpr={row['fpr']:.3f} ({row['seconds']:.1f} s)")
                    rows.append(row)
    return pd.DataFrame(rows)


def _table(frame: pd.DataFrame, value: str, fmt: str) -> str:
    pivot = frame.pivot_table(index=["method", "statistic"], columns="n_random", values=value, aggfunc="mean")
    header = "| estimator | statistic | " + " | ".join(f"R = {c}" for c in pivot.columns) + " |"
    lines = [header, "|" + "---|" * (len(pivot.columns) + 2)]
    for (method, statistic), row in pivot.iterrows():
        lines.append(f"| {method} | {statistic} | " + " | ".join(format(v, fmt) for v in row.to_numpy()) + " |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    """Power and false-positive rate against the number of random sets, per estimator (shift statistic)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    ubs = frame[frame["statistic"] == "shift"]
    for method, part in ubs.groupby("method"):
        agg = part.groupby("n_random")[["power", "fpr"]].mean()
        axes[0].plot(agg.index, agg["power"], marker="o", label=method)
        axes[1].plot(agg.index, agg["fpr"], marker="o", label=method)
    axes[0].set(xscale="log", xlabel="random sets R", ylabel="power on planted concepts", ylim=(0, 1.02),
                title="Power (shift statistic, all cases)")
    axes[1].axhline(0.05, color="k", ls="--", lw=0.8)
    axes[1].set(xscale="log", xlabel="random sets R", ylabel="false-positive rate (noise concepts)",
                ylim=(0, 0.2), title="Calibration")
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(frame: pd.DataFrame, size: str, seconds: float) -> str:
    by_case = frame.groupby(["case", "method", "statistic"])[["signs", "power", "wrong", "fpr"]].mean()
    worst = frame.groupby(["method", "statistic"]).agg(min_signs=("signs", "min"), wrong=("wrong", "sum"),
                                                       fpr=("fpr", "mean"), power=("power", "mean"),
                                                       seconds=("seconds", "mean"))
    n_noise = int(frame.groupby(["method", "statistic", "n_random"])["n_noise"].sum().iloc[0])
    lines = [
        "# Validation study: which CAV estimator, statistic and number of random sets",
        "",
        f"Generated by `python -m benchmarks.validation{' --small' if size == 'small' else ''}` "
        f"({size} size, {seconds / 60:.1f} min on this machine). Cases, metrics and code: "
        "`benchmarks/planted.py`, `benchmarks/validation.py`.",
        "",
        "Planted cases (known answer in every layer): **lesion** (texture inside a disc, concepts shown in "
        "rectangles, half-planes or the full frame; a trained 3-conv CNN, conv3 followed only by global "
        "pooling and a dense head, so every example has the same gradient there), **lesion_nested** (the same "
        "task, convolutions inside a nested backbone, another training seed) and **stripes** (a hand-built "
        "model whose logit is exactly horizontal minus vertical stripe energy, probed before pooling + linear "
        "head). Each case also holds noise concepts drawn from the random images' distribution.",
        "",
        "## Summary over all cases and numbers of random sets",
        "",
        "| estimator | statistic | worst sign accuracy | wrong-way significant | mean power | mean FPR | mean time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, statistic), row in worst.iterrows():
        lines.append(f"| {method} | {statistic} | {row.min_signs:.2f} | {int(row.wrong)} | {row.power:.2f} | "
                     f"{row.fpr:.3f} | {row.seconds:.1f} |")
    lines += ["", f"FPR is over {n_noise} noise rows per setting (binomial 95 % upper bound at a true 5 %: "
              f"{0.05 + 1.96 * np.sqrt(0.05 * 0.95 / max(n_noise, 1)):.3f}).", "",
              "## Sign accuracy (planted cells), mean over cases", "", _table(frame, "signs", ".2f"), "",
              "## Power (significant after Holm correction and right), mean over cases", "",
              _table(frame, "power", ".2f"), "",
              "## False-positive rate on noise concepts (uncorrected p < 0.05)", "", _table(frame, "fpr", ".3f"),
              "", "![power and calibration](validation.png)", "", "## Per case", "",
              "| case | estimator | statistic | signs | power | wrong | fpr |", "|---|---|---|---|---|---|---|"]
    for (case, method, statistic), row in by_case.iterrows():
        lines.append(f"| {case} | {method} | {statistic} | {row.signs:.2f} | {row.power:.2f} | {row.wrong:.1f} | "
                     f"{row.fpr:.3f} |")
    lines += ["", "## Sign accuracy per layer (shift statistic, R = 20)", "",
              "| case | estimator | " + " | ".join(["layer 1", "layer 2", "layer 3"]) + " |", "|---|---|---|---|---|"]
    sub = frame[(frame["statistic"] == "shift") & (frame["n_random"] == 20)]
    for _, row in sub.iterrows():
        values = list(row["signs_per_layer"].values())
        lines.append(f"| {row['case']} | {row['method']} | " + " | ".join(f"{v:.2f}" for v in values)
                     + " |" + " |" * (3 - len(values)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smaller sets and fewer settings (minutes)")
    parser.add_argument("--work", default="/tmp/concepts-validation", help="where cases and the cache go")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for validation.md and validation.png")
    args = parser.parse_args(argv)
    size = "small" if args.small else "full"
    randoms = (10, 20) if args.small else (10, 20, 50, 100)
    start = time.perf_counter()
    frame = run_study(Path(args.work), size, randoms=randoms)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_json(out / "validation.json", orient="records", indent=1)
    plot(frame, out / "validation.png")
    (out / "validation.md").write_text(render(frame, size, time.perf_counter() - start))
    print(f"wrote {out / 'validation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
