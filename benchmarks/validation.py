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
    misses = [f"{r['class']} / {r['layer']} / {r['concept']} (ubs {r['ubs']:+.2f}, p = {r['p_value']:.2g}"
              f"{', significant' if r['significant'] else ''})" for (_, r), ok in zip(planted.iterrows(), right) if not ok]
    return {"signs": float(right.mean()), "power": float((right & significant).mean()), "misses": misses,
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
    undetermined = [f"{cls} / {concept}: {why}" for (cls, concept), why in sorted(case.undetermined.items())]
    return {"case": case.name, "method": method, "statistic": statistic, "n_random": n_random,
            "seconds": seconds, "undetermined": undetermined, **evaluate(case, result.to_frame(), statistic)}


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


def compat_fpr(work: Path, size: str, seeds=(0, 1), n_random: int = 20) -> dict[str, Any]:
    """False-positive rate of ``compat="tcav"`` (the original procedure) and of the defaults on the noise
    concepts of the ``lesion`` case, same random sets and seeds."""
    import concepts

    case = make_case("lesion", work, size=size)
    noise = [str(case.data / "concepts" / c) for c in case.noise_concepts]
    out = {}
    for mode in ("tcav", None):
        p_values, start = [], time.perf_counter()
        for seed in seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = concepts.score(case.model, case.layers, noise, data=case.data, n_random=n_random, seed=seed,
                                        compat=mode, cache_dir=work / "cache", progress=False, robustness=False)
            p_values += list(result.to_frame()["p_value"])
        p = np.asarray(p_values, dtype=float)
        out["compat=tcav" if mode else "defaults"] = {"n": int(p.size), "fpr": float((p < 0.05).mean()),
                                                      "seconds": time.perf_counter() - start}
    return out


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


def decision(frame: pd.DataFrame, worst: pd.DataFrame) -> list[str]:
    """The defaults the study supports, in words, with the numbers that support them."""
    from concepts.analysis import DEFAULT_CAV, DEFAULT_STATISTIC

    rows = []
    default = worst.loc[(DEFAULT_CAV, DEFAULT_STATISTIC)] if (DEFAULT_CAV, DEFAULT_STATISTIC) in worst.index else None
    if default is not None:
        rows.append(f"The toolkit's defaults are `cav=\"{DEFAULT_CAV}\"` and `statistic=\"{DEFAULT_STATISTIC}\"`: worst "
                    f"sign accuracy {default.min_signs:.2f}, {int(default.wrong)} wrong-way findings, mean power "
                    f"{default.power:.2f}, mean false-positive rate {default.fpr:.3f}.")
    for (method, statistic), row in worst.iterrows():
        if (method, statistic) == (DEFAULT_CAV, DEFAULT_STATISTIC) or statistic != DEFAULT_STATISTIC:
            continue
        rows.append(f"- `{method}` with the same statistic: worst sign accuracy {row.min_signs:.2f}, "
                    f"{int(row.wrong)} wrong-way findings, power {row.power:.2f}, FPR {row.fpr:.3f}.")
    if default is not None and "misses" in frame:
        part = frame[(frame["method"] == DEFAULT_CAV) & (frame["statistic"] == DEFAULT_STATISTIC)]
        missed = sorted({m for cells in part["misses"] for m in cells})
        rows += ["", "Planted cells the default got the wrong way round in at least one setting: "
                 + ("; ".join(missed) if missed else "none") + "."]
    rows += ["",
             "Rules applied, in order (from the issue): the right sign in every layer of every planted case, a "
             "false-positive rate at or below nominal, then the most power. No setting is right in every single "
             "cell; the difference of means comes closest (the highest worst-case sign accuracy, and its misses, "
             "named above, are weak cells that are nowhere near significant) and it is the only estimator that "
             "never reports a significant finding in the wrong direction. The filters (ridge, logistic, SVM) "
             "separate the sets with directions that also cancel distractors, and in the middle layer (ridge) or "
             "in the last convolutional layer before pooling (logistic, SVM) those directions point against the "
             "class gradient although the concept images raise the class score -- and with a powerful statistic "
             "such a reversed direction becomes a significant wrong answer. Among statistics, the sign-count "
             "score has no power where every example shares one gradient; direction-only UBS loses much of it, "
             "because random pairs' small, noisy mean differences become unit vectors as long as a real "
             "concept's; the shift statistic keeps the displacement, restores the power, and its false-positive "
             "rate stays at or below nominal (the null is unchanged: another random set in place of the concept).",
             "",
             "Power of the default grows from R = 10 to R = 20 and hardly beyond (table below), so `n_random` "
             "stays 20; more random sets sharpen the null at linear cost."]
    return rows


def render(frame: pd.DataFrame, size: str, seconds: float, compat: dict[str, Any] | None = None) -> str:
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
        "| estimator | statistic | worst sign accuracy | wrong-way significant | mean power | mean FPR | mean time (s)¹ |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, statistic), row in worst.iterrows():
        lines.append(f"| {method} | {statistic} | {row.min_signs:.2f} | {int(row.wrong)} | {row.power:.2f} | "
                     f"{row.fpr:.3f} | {row.seconds:.1f} |")
    lines += ["", "¹ Mean wall time of one `concepts.score` call on a busy 2-core machine. Each estimator's `shift` "
              "setting (run first) pays for fitting its CAVs; the `ubs` and `score` settings reuse them from the "
              "cache, so the `shift` row is the estimator's cost.", "", "## Decision", ""] + decision(frame, worst) + ["", f"FPR is over {n_noise} noise rows per setting (binomial 95 % upper bound at a true 5 %: "
              f"{0.05 + 1.96 * np.sqrt(0.05 * 0.95 / max(n_noise, 1)):.3f}).", "",
              "## Sign accuracy (planted cells), mean over cases", "", _table(frame, "signs", ".2f"), "",
              "## Power (significant after Holm correction and right), mean over cases", "",
              _table(frame, "power", ".2f"), "",
              "## False-positive rate on noise concepts (uncorrected p < 0.05)", "", _table(frame, "fpr", ".3f"),
              "", "![power and calibration](validation.png)", ""]
    if "undetermined" in frame:
        lines += ["## Planted cells without a known answer", "",
                  "Each planted (class, concept) cell was checked at the model's output first: the concept's images "
                  "against random images, on that class's logit (Welch's test). Cells the trained model does not "
                  "carry out have no direction to find in any layer and are left out of the scores above:", ""]
        for case, part in frame.groupby("case"):
            cells = part["undetermined"].iloc[0]
            lines.append(f"- **{case}**: " + ("; ".join(cells) if len(cells) else "none — every planted cell is "
                                               "carried out by the model"))
        lines.append("")
    if compat:
        lines += ["## The original procedure (`compat=\"tcav\"`)", "",
                  "Noise concepts of the lesion case (drawn like the random images), R = 20, two seeds; the "
                  "original procedure (hinge SGD CAVs, sign-count score, Student's t-test against one fixed random "
                  "set's runs, no correction) against the defaults:", "",
                  "| procedure | noise rows | p < 0.05 |", "|---|---|---|"]
        for name, row in compat.items():
            lines.append(f"| {name} | {row['n']} | {row['fpr']:.1%} |")
        lines += ["", "Every concept run shares one concept set, so the t-test's variance misses the set's own "
                  "idiosyncrasy: use `compat=\"tcav\"` to reproduce a published number, never to decide.", ""]
    lines += ["## Per case", "",
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
    parser.add_argument("--render-only", action="store_true",
                        help="re-render validation.md from the validation.json already in --out")
    args = parser.parse_args(argv)
    size = "small" if args.small else "full"
    randoms = (10, 20) if args.small else (10, 20, 50, 100)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        saved = json.loads((out / "validation.json").read_text(encoding="utf-8"))
        frame, meta = pd.DataFrame(saved["rows"]), saved["meta"]
    else:
        start = time.perf_counter()
        frame = run_study(Path(args.work), size, randoms=randoms)
        compat = compat_fpr(Path(args.work), size)
        meta = {"size": size, "seconds": time.perf_counter() - start, "compat": compat}
        (out / "validation.json").write_text(json.dumps({"meta": meta, "rows": frame.to_dict(orient="records")},
                                                        indent=1, default=float))
    plot(frame, out / "validation.png")
    (out / "validation.md").write_text(render(frame, meta["size"], meta["seconds"], meta.get("compat")))
    print(f"wrote {out / 'validation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
