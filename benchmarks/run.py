"""Speed and memory benchmarks against the compute floor (issues 6 and 13): the command line.

Run from the repository root::

    .venv/bin/python -m benchmarks.run            # full run
    .venv/bin/python -m benchmarks.run --quick    # reference scenarios, all pairs, R 10 -> 100, radiomics
    .venv/bin/python -m benchmarks.run --smoke    # seconds: tiny cases, checks the plumbing only

Results go to ``benchmarks/results/latest.md`` and ``latest.json`` (``--out DIR`` elsewhere).

The parts, one job each: :mod:`benchmarks.data` (synthetic folders and models),
:mod:`benchmarks.cases` (what is run), :mod:`benchmarks.timing` (floor, repetitions, memory
peaks, profiles), :mod:`benchmarks.report` (targets PASS/MISS, Markdown). Every case runs in a
fresh Python subprocess (``--smoke``: all in one), so its peak resident memory is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.cases import CASE_KINDS, plan
from benchmarks.report import evaluate, json_default, render_markdown
from benchmarks.timing import load1, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"


def worker(specs: list[dict[str, Any]], work: Path, out_file: Path) -> None:
    """Run cases in this process; write their results as JSON to ``out_file`` after each one.

    Parameters
    ----------
    specs
        Case specs from :func:`benchmarks.cases.plan`.
    work
        The run's work folder.
    out_file
        Where the JSON list of results goes.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    warnings.filterwarnings("ignore")
    results = []
    for spec in specs:
        start = time.perf_counter()
        load_start = load1()
        try:
            result = CASE_KINDS[spec["kind"]](spec, work)
            result["status"] = "ok"
        except Exception as exc:  # a failed case is reported, never hides the others
            import traceback

            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-3000:]}
        result["case_wall_s"] = round(time.perf_counter() - start, 2)
        result["load_average_1min"] = [load_start, load1()]
        results.append({"name": spec["name"], "group": spec["group"], "kind": spec["kind"],
                        "description": spec.get("description", ""), "spec": spec, **result})
        out_file.write_text(json.dumps(results, indent=1, default=json_default))


def run_isolated(specs: list[dict[str, Any]], work: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run ``specs`` in one fresh subprocess; return their results (errors included)."""
    out_file = Path(tempfile.mkstemp(prefix="bench-", suffix=".json", dir=work)[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    command = [sys.executable, "-m", "benchmarks.run", "--worker", json.dumps(specs), "--work", str(work),
               "--result", str(out_file)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    try:
        results = json.loads(out_file.read_text() or "[]")
    except json.JSONDecodeError:
        results = []
    done = {r["name"] for r in results}
    for spec in specs:
        if spec["name"] not in done:
            results.append({"name": spec["name"], "group": spec["group"], "kind": spec["kind"], "spec": spec,
                            "description": spec.get("description", ""), "status": "error",
                            "error": f"worker exited with {proc.returncode}", "traceback": proc.stderr[-3000:]})
    for r in results:
        r["process_wall_s"] = round(time.perf_counter() - start, 2)
        log(f"  {r['name']}: {r['status']}" + (f" ({r.get('error')})" if r["status"] != "ok" else "")
            + f" [{r.get('case_wall_s', '?')} s]")
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line; returns 0 when every case ran (targets may be missed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="reference scenarios, all pairs, R = 10 and 100, radiomics (one repetition each)")
    mode.add_argument("--smoke", action="store_true", help="seconds: tiny cases, for the test suite")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for latest.md and latest.json")
    parser.add_argument("--only", default=None, help="comma-separated case names (for development)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions of every timed case (best of them is reported; default: the mode's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(json.loads(args.worker), Path(args.work), Path(args.result))
        return 0

    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    cases = plan(mode_name)
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c["name"] in wanted]
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be at least 1")
        cases = [{**c, "reps": args.reps} if "reps" in c else c for c in cases]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="concepts-bench-"))
    log(f"benchmarks ({mode_name}): {len(cases)} case(s); data in {work}")
    info = machine()
    results: list[dict[str, Any]] = []
    try:
        if mode_name == "smoke":
            results = run_isolated(cases, work, log)
        else:
            for case in cases:
                log(f"- {case['name']} ...")
                results += run_isolated([case], work, log)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    targets = evaluate(results)
    command = "python -m benchmarks.run" + {"smoke": " --smoke", "quick": " --quick", "full": ""}[mode_name] \
        + (f" --reps {args.reps}" if args.reps is not None else "") + (f" --only {args.only}" if args.only else "")
    report = {"mode": mode_name, "started": started, "wall_seconds": time.perf_counter() - t0, "command": command,
              "machine": info, "targets": targets, "cases": results}
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    markdown = render_markdown(report)
    (out / "latest.md").write_text(markdown)
    log(markdown)
    return 0 if all(r.get("status") == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
