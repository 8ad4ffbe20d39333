"""Benchmark report: targets evaluated PASS / MISS, Markdown and JSON rendering, profile summary.

Pure functions of the case results (:mod:`benchmarks.cases`); nothing here measures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.timing import best

#: Issue 13 (2-core machine) and the radiomics targets kept from issue 6:
#: key -> (label, bound, higher_is_better).
TARGETS: dict[str, tuple[str, float, bool]] = {
    "three_calls_seconds": ("three separate calls, fresh cache, one process: ≤ 4 s", 4.0, False),
    "three_calls_vs_captum": ("three separate calls ≥ 10× faster than Captum (59 s measured here)", 10.0, True),
    "three_calls_floor": ("three separate calls ≤ 6× floor", 6.0, False),
    "one_call_floor": ("one call with every concept ≤ 3× floor", 3.0, False),
    "all_pairs_floor": ("all-pairs null ≤ 4× floor", 4.0, False),
    "new_concept_floor_share": ("second call with a new concept ≤ 1.5× the floor share of its images", 1.5, False),
    "disk_cold_vs_memory": ("cold on-disk cache ≤ 1.10× in-memory", 1.10, False),
    "random_sets_10_to_100": ("R = 10 → 100 random sets ≤ 3× the time", 3.0, False),
    "warm_rerun_speedup": ("warm rerun ≥ 50× faster than cold", 50.0, True),
    "radiomics_parallel": ("parallel radiomics ≥ 1.6× serial", 1.6, True),
    "warm_cache_radiomics": ("warm-cache rerun of the radiomics table ≥ 10× faster than cold", 10.0, True),
}

FLOOR_DEFINITION = (
    "decoding every distinct image the work uses once (PNG → model input) + one forward pass over all of them + "
    "the forward and backward passes of the class examples; same model, layers, classes and batch size (32), "
    "through `probes.engine.Engine` with an empty in-memory cache and pre-traced step functions, timed in the same "
    "process as the calls and interleaved with them (best of the repetitions)")


def json_default(value: Any) -> Any:
    """JSON encoder fallback for numpy scalars and arrays and paths."""
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def evaluate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check every target against the case results.

    Parameters
    ----------
    results
        The cases' result dicts (``name``, ``status`` and their measurements).

    Returns
    -------
    list of dict
        One row per target: ``target``, ``label``, ``bound``, ``value`` (the measured ratio or
        seconds), ``status`` (PASS, MISS or n/a when the case did not run) and ``evidence``.
    """
    by_name = {r["name"]: r for r in results if r.get("status") == "ok"}
    rows = []

    def add(key: str, value: float | None, evidence: str, load: Any = None) -> None:
        label, bound, higher = TARGETS[key]
        if value is None or value != value:
            status = "n/a"
        elif higher:
            status = "PASS" if value >= bound else "MISS"
        else:
            status = "PASS" if value <= bound else "MISS"
        rows.append({"target": key, "label": label, "bound": bound, "value": None if value is None else round(value, 2),
                     "status": status, "evidence": evidence, "load": load})

    ref = by_name.get("reference")
    load = ref and ref.get("load_average_1min")
    get = (lambda k: ref.get(k)) if ref else (lambda k: None)
    add("three_calls_seconds", get("three_calls_best_s"),
        "reference: sum of the three calls (best repetition), seconds", load)
    add("three_calls_vs_captum", get("speedup_vs_captum"),
        "Captum's 59 s (measured on this machine, same model and images) / the three calls", load)
    add("three_calls_floor", get("three_calls_ratio"), "reference: three calls / floor", load)
    add("one_call_floor", get("one_call_ratio"), "reference: one call, every concept, in memory / floor", load)
    allp = by_name.get("reference_all_pairs")
    add("all_pairs_floor", allp and allp["ratio"], "reference_all_pairs: best call / floor",
        allp and allp.get("load_average_1min"))
    add("new_concept_floor_share", get("new_concept_ratio"),
        "reference: call with the third concept on a cache primed by the other two / decoding + forward pass of its "
        "images", load)
    add("disk_cold_vs_memory", get("disk_cold_vs_memory"),
        "reference: one call on a fresh on-disk cache / the same call in memory", load)
    r_cases = sorted((r for r in results if r["name"].startswith("random_sets_R") and r.get("status") == "ok"),
                     key=lambda r: r["spec"]["n_random"])
    if len(r_cases) >= 2:
        lo, hi = r_cases[0], r_cases[-1]
        add("random_sets_10_to_100", hi["e2e_best_s"] / lo["e2e_best_s"],
            f"{hi['name']} / {lo['name']} best call time" +
            ("" if hi["spec"]["n_random"] == 100 else f" (R={hi['spec']['n_random']} only in this mode)"),
            [lo.get("load_average_1min"), hi.get("load_average_1min")])
    else:
        add("random_sets_10_to_100", None, "R series not run")
    add("warm_rerun_speedup", get("warm_speedup"),
        "reference: one call on a fresh on-disk cache / the same call again on that folder", load)
    rad = by_name.get("radiomics")
    add("radiomics_parallel", rad and rad["parallel_speedup"],
        f"radiomics: best serial / best parallel (n_jobs={rad['n_jobs_parallel']})" if rad else "radiomics not run",
        rad and rad.get("load_average_1min"))
    add("warm_cache_radiomics", rad and rad["warm_speedup"], "radiomics table: cold-cache run / warm-cache rerun",
        rad and rad.get("load_average_1min"))
    return rows


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _parts(parts: dict[str, float]) -> str:
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.2f} s" for k, v in ranked if v >= 0.01) or "–"


def _load(values: Any) -> str:
    return "→".join(_f(x) for x in values) if values else "–"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, targets, scenarios, scaling, profiles, cases, errors.

    Parameters
    ----------
    report
        ``mode``, ``started``, ``wall_seconds``, ``command``, ``machine``, ``targets``, ``cases``.

    Returns
    -------
    str
        The Markdown text (``benchmarks/results/latest.md``).
    """
    m = report["machine"]
    lines = [f"# Benchmark results ({report['mode']} run)", "",
             f"Run {report['started']} UTC, {report['wall_seconds']:.0f} s in all, commit {m.get('git_commit', '?')}. "
             f"Command: `{report['command']}`."
             + (f" Library files with uncommitted changes during the run: {', '.join(m['library_uncommitted_changes'])}."
                if m.get("library_uncommitted_changes") else ""), "",
             f"**Other load on the machine**: {m.get('shared_machine', '?')} (contention only adds time; every "
             "repetition is in latest.json).", "",
             "## Machine", "",
             f"- CPU: {m.get('cpu', '?')}, {m.get('usable_cores', m.get('logical_cores'))} usable cores; memory "
             f"{m.get('memory_total_gb', '?')} GB ({m.get('memory_available_gb', '?')} GB available at start); load "
             f"average at start {m.get('load_average_at_start', '?')}",
             f"- Python {m.get('python')} on {m.get('platform')}; numpy BLAS: {m.get('numpy_blas', '?')}",
             "- " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()), "",
             "## Targets (issue 13; radiomics from issue 6)", "",
             f"Floor: {FLOOR_DEFINITION}.", "",
             "| target | measured | status | load (1 min, start→end) | from |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        unit = " s" if t["target"] == "three_calls_seconds" else "×"
        value = f"{_f(t['value'])}{unit}" if t["value"] is not None else "–"
        load = t.get("load")
        load_text = _load(load) if load and not isinstance(load[0], list) else \
            " / ".join(_load(x) for x in load) if load else "–"
        lines.append(f"| {t['label']} | {value} | **{t['status']}** | {load_text} | {t['evidence']} |")
    ref = next((r for r in report["cases"] if r["kind"] == "scenarios" and r.get("status") == "ok"), None)
    if ref:
        each = ", ".join(f"{x:.2f}" for x in ref["three_calls_each_best_s"])
        lines += ["", "## Reference work: the scenarios", "",
                  f"Layer widths {', '.join(f'{k} {v:,}' for k, v in ref['layer_widths'].items())}; floor "
                  f"{ref['floor_best_s']:.2f} s = decoding {ref['floor_decode_best_s']:.2f} s + passes "
                  f"{ref['floor_passes_best_s']:.2f} s ({ref['floor_images']} distinct images, "
                  f"{ref['floor_class_examples']} of them class examples with backward passes). Captum 0.9 on the "
                  f"same work, same model and images, measured on this machine: {ref['captum_seconds']:.0f} s "
                  f"({ref['captum_quiet_seconds'][0]:.0f}–{ref['captum_quiet_seconds'][1]:.0f} s quiet).", "",
                  "| scenario | best s | ratio |", "|---|---|---|",
                  f"| three separate calls (fresh on-disk cache; calls {each} s) | {ref['three_calls_best_s']:.2f} | "
                  f"{ref['three_calls_ratio']:.1f}× floor; {ref['speedup_vs_captum']:.1f}× faster than Captum |",
                  f"| one call, every concept, in memory | {ref['one_call_best_s']:.2f} | "
                  f"{ref['one_call_ratio']:.1f}× floor |",
                  f"| the same call, fresh on-disk cache (cold) | {ref['disk_cold_best_s']:.2f} | "
                  f"{ref['disk_cold_vs_memory']:.2f}× in memory |",
                  f"| the same call again (warm) | {ref['disk_warm_best_s']:.3f} | "
                  f"{ref['warm_speedup']:.0f}× faster than cold |",
                  f"| a new concept on a cache primed by the other two | {ref['new_concept_best_s']:.2f} | "
                  f"{ref['new_concept_ratio']:.1f}× its floor share ({ref['new_concept_floor_share_s']:.2f} s) |", "",
                  f"Peak RSS {ref['peak_rss_mb']:.0f} MB (process start of the case {ref['rss_at_case_start_mb']:.0f} MB; "
                  f"TensorFlow and the model included). Load {_load(ref.get('load_average_1min'))}.", "",
                  "Where the time of the three calls goes (cProfile, inclusive seconds per library phase; the "
                  "profiler adds overhead, so compare shares, not seconds): "
                  f"{_parts(ref.get('three_calls_breakdown_s', {}))}.", "",
                  "| project function (three calls, cProfile) | s | % |", "|---|---|---|"]
        lines += [f"| `{p['function']}` | {p['seconds']:.2f} | {p['percent']:.0f} |"
                  for p in ref.get("three_calls_profile_functions", [])[:12]]
    lines += ["", "## End-to-end against the compute floor (one call, every concept, in memory)", "",
              "| case | layer widths | CAVs/layer | distinct images | floor s | call s | ratio (reps) | "
              "peak RSS MB (start) | load | phases (cProfile, s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        if r["kind"] not in ("score", "demo"):
            continue
        if r.get("status") != "ok":
            lines.append(f"| {r['name']} | error: {r.get('error', '?')} | | | | | | | | |")
            continue
        widths = "/".join(f"{w / 1000:.0f}k" if w >= 1000 else str(w) for w in r.get("layer_widths", {}).values())
        lines.append(f"| {r['name']} | {widths} | {r.get('cavs_per_layer', '–')} | {r.get('floor_images', '–')} | "
                     f"{_f(r['floor_best_s'])} | {_f(r['e2e_best_s'])} | **{_f(r['ratio'], 1)}×** ({len(r['e2e_s'])}) | "
                     f"{_f(r['peak_rss_mb'], 0)} ({_f(r['rss_at_case_start_mb'], 0)}) | "
                     f"{_load(r.get('load_average_1min'))} | {_parts(r.get('breakdown_s', {}))} |")
    rad = next((r for r in report["cases"] if r["kind"] == "radiomics" and r.get("status") == "ok"), None)
    if rad:
        lines += ["", "## Radiomics", "",
                  f"{rad['n_images']} images × {rad['n_features']} features.", "",
                  "| run | best s | features/s |", "|---|---|---|",
                  f"| serial (n_jobs=1, no cache) | {best(rad['serial_s']):.2f} | {rad['serial_features_per_s']:.0f} |",
                  f"| parallel (n_jobs={rad['n_jobs_parallel']}, no cache) | {best(rad['parallel_s']):.2f} | "
                  f"{rad['parallel_features_per_s']:.0f} |",
                  f"| cold cache (n_jobs={rad['n_jobs_parallel']}) | {best(rad['cold_cache_s']):.2f} | "
                  f"{rad['n_images'] * rad['n_features'] / best(rad['cold_cache_s']):.0f} |",
                  f"| warm cache | {best(rad['warm_cache_s']):.3f} | "
                  f"{rad['n_images'] * rad['n_features'] / best(rad['warm_cache_s']):.0f} |", "",
                  f"Parallel speed-up {rad['parallel_speedup']:.2f}×; warm cache {rad['warm_speedup']:.1f}× faster "
                  f"than cold. One serial run (cProfile): {_parts(rad.get('serial_breakdown_s', {}))}. Peak RSS: "
                  f"parent {rad['peak_rss_mb']:.0f} MB, largest worker {rad['peak_rss_mb_largest_worker']:.0f} MB."]
    micro = next((r for r in report["cases"] if r["kind"] == "micro" and r.get("status") == "ok"), None)
    if micro:
        sh = micro["shapes"]
        lines += ["", "## Micro-checks", "",
                  f"- Sensitivities g·Vᵀ, g {sh['gradients'][0]}×{sh['gradients'][1]}, V {sh['vectors'][0]} vectors, "
                  f"float64: `g @ V.T` {micro['sens_g_at_vT_s']:.3f} s, `(V @ g.T).T` {micro['sens_v_at_gT_T_s']:.3f} s"
                  + (f", one BLAS thread {micro['sens_g_at_vT_1thread_s']:.3f} s"
                     if "sens_g_at_vT_1thread_s" in micro else "") + ".",
                  f"- Gram matrix of a {sh['pool'][0]}×{sh['pool'][1]} pool: float64 blockwise "
                  f"{micro['gram_f64_blockwise_s']:.2f} s, float32 {micro['gram_f32_s']:.2f} s (max relative "
                  f"difference {micro['gram_f32_rel_error']:.1e})."]
    lines += ["", "## Scaling", ""]
    for group in ("random sets R", "layers", "class examples", "activation width"):
        members = [r for r in report["cases"] if r["group"] == group and r.get("status") == "ok"]
        if not members:
            continue
        first = members[0]
        row = ", ".join(f"{r['name']}: {r['e2e_best_s']:.1f} s ({r['e2e_best_s'] / first['e2e_best_s']:.1f}× "
                        f"the first; {r['ratio']:.1f}× floor; peak {r['peak_rss_mb']:.0f} MB)" for r in members)
        lines.append(f"- **{group}**: {row}.")
    profiles = [(r["name"], r["profile"]) for r in report["cases"] if r.get("profile")]
    if profiles:
        lines += ["", "## Profiles (pyinstrument)", ""]
        for name, prof in profiles:
            if "error" in prof:
                lines += [f"**{name}**: {prof['error']}", ""]
                continue
            lines += [f"**{name}** ({prof['profiled_seconds']:.1f} s profiled): project functions by total time, "
                      "then the functions with most self time.", "", "| project function | s | % |", "|---|---|---|"]
            lines += [f"| `{p['function']}` | {p['seconds']:.2f} | {p['percent']:.0f} |"
                      for p in prof["project_total_time"][:8]]
            lines += ["", "| self time | s | % |", "|---|---|---|"]
            lines += [f"| `{p['function']}` | {p['seconds']:.2f} | {p['percent']:.0f} |" for p in prof["self_time"][:6]]
            lines.append("")
    lines += ["", "## Cases", ""] + [f"- **{r['name']}**: {r.get('description', '')}" for r in report["cases"]]
    errors = [r for r in report["cases"] if r.get("status") != "ok"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {r['name']}: {r.get('error')}\n\n```\n{r.get('traceback', '')}\n```"
                                          for r in errors]
    return "\n".join(lines) + "\n"
