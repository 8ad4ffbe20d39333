"""The ``concepts`` command: reports, measure tables, manifests and the demo.

::

    concepts report DATA_DIR --model MODEL --layers L1,L2 --out OUT_DIR
    concepts compare DATA_DIR --model base=a.keras --model new=b.keras --layers conv1,conv2 --out OUT_DIR
    concepts measures IMAGES --masks MASKS --out table.csv
    concepts manifest DATA_DIR [--out FILE] | concepts manifest --check FILE [DATA_DIR]
    concepts demo [--case histology|mri|mri3d] [--out DIR]
    concepts layers MODEL [--suggested] [--output NAME]
    concepts cache info|verify|clear [--dir DIR]

Bad arguments end with one line saying what was wrong and how to fix it, and a non-zero exit.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import Config

#: ``concepts.Config`` option -> (flag, argparse keywords): the one mapping from command-line flags to
#: the options of ``report`` and ``compare``. Defaults come from ``Config``, never from a second list.
CONFIG_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "n_random": ("--n-random", dict(type=int, help="random sets = concept-vs-random runs")),
    "null_pairs": ("--null-pairs", dict(choices=["auto", "all", "ring"],
                                        help="random-vs-random runs: auto (every pair up to 21 sets, then 20 "
                                             "partners per set), all pairs, or a ring")),
    "statistic": ("--statistic", dict(choices=["shift", "ubs", "score"],
                                      help="what the test compares with the random concepts")),
    "target": ("--target", dict(choices=["logit", "log_prob", "prob"],
                                help="what is differentiated (logit: the pre-softmax logit)")),
    "cav": ("--cav", dict(choices=["mean", "logistic", "svm", "svm_hinge", "ridge"], help="the CAV estimator")),
    "correction": ("--correction", dict(choices=["holm", "bh", "bonferroni", "none"],
                                        help="multiple-comparison correction across the whole report")),
    "significance": ("--significance", dict(type=float, help="level of the 'significant' column (on corrected "
                                                             "q-values)")),
    "seed": ("--seed", dict(type=int, help="seed for every random choice")),
    "batch_size": ("--batch-size", dict(type=int, help="images per pass")),
    "cache_dir": ("--cache-dir", dict(help="activation cache folder (default: $CONCEPTS_CACHE_DIR or "
                                           "~/.cache/concepts-toolkit)")),
    "memory_budget": ("--memory-budget", dict(help="RAM for arrays that grow with the data; larger class sets "
                                                   "are streamed")),
    "on_error": ("--on-error", dict(choices=["raise", "skip"], help="unusable image files: stop, or skip them")),
    "recursive": ("--recursive", dict(action="store_true", help="also use images in sub-folders of class and "
                                                               "concept folders (e.g. one per patient)")),
    "progress": ("--quiet", dict(action="store_false", help="no progress bars")),
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for option, (flag, keywords) in CONFIG_FLAGS.items():
        default = Config.default(option)
        keywords = dict(keywords, dest=option, default=default)
        if keywords.get("action") != "store_false" and default is not None:
            keywords["help"] += f" (default: {default})"
        parser.add_argument(flag, **keywords)


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`concepts.Config` that the flags of ``concepts report`` / ``compare`` describe.

    Examples
    --------
    >>> config_from_args(_parser().parse_args(["report", "data", "--model", "m.keras", "--layers", "c1",
    ...                                        "--n-random", "30", "--quiet"]))
    Config(n_random=30, progress=False)
    """
    return Config(**{option: getattr(args, option) for option in CONFIG_FLAGS})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="concepts",
        description="Concept-based explanations (TCAV, RCV, UBS) for Keras medical-imaging models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rep = sub.add_parser("report", help="score every class x layer x concept and write an HTML report",
                         description="Score every class x layer x concept of DATA_DIR and write report.html, "
                                     "report.csv and the figures into --out.")
    rep.add_argument("data", metavar="DATA_DIR",
                     help="data folder with classes/<class>/, concepts/<concept>/ and random/ (optional masks/)")
    rep.add_argument("--model", required=True, help="a saved Keras model (.keras or .h5)")
    rep.add_argument("--layers", required=True, help="comma-separated layer names or outer/inner paths")
    rep.add_argument("--out", default="concepts_report", help="output folder (default: %(default)s)")
    rep.add_argument("--classes", help="comma-separated classes to report (default: every class folder)")
    rep.add_argument("--concepts", help="comma-separated concept folder names (default: all under concepts/)")
    rep.add_argument("--measures", help="comma-separated pyradiomics features to add as regression concepts, "
                                        "e.g. original_glcm_Contrast (measured on the class images)")
    rep.add_argument("--masks", help="mask folder mirroring the images, for --measures (default: DATA_DIR/masks "
                                     "when it exists)")
    rep.add_argument("--channel", default="gray", help="image channel for --measures: gray, r, g, b or "
                                                       "hematoxylin (default: %(default)s)")
    rep.add_argument("--sanity", action="store_true", help="also run on randomised weights and shuffled measures")
    rep.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler (e.g. tcp://10.0.0.5:8786): class "
                     "examples' gradient passes and --measures run on its workers, which must see the same files")
    _add_config_flags(rep)

    cmp = sub.add_parser("compare", help="score the same concepts for several models and compare them",
                         description="Score the concepts of DATA_DIR for every --model on one shared design, align "
                                     "their layers by relative depth and write compare.html, compare.csv, "
                                     "consistency.csv, differences.csv and the figures into --out.")
    cmp.add_argument("data", metavar="DATA_DIR", help="data folder with classes/, concepts/ and random/")
    cmp.add_argument("--model", action="append", required=True, metavar="NAME=FILE",
                     help="a model to compare, as name=path.keras (give --model at least twice; the first is the "
                          "reference)")
    cmp.add_argument("--layers", action="append", required=True, metavar="[NAME=]L1,L2",
                     help="layers of every model (conv1,conv2), or of one model (name=conv1,conv2; repeat per model)")
    cmp.add_argument("--out", default="concepts_comparison", help="output folder (default: %(default)s)")
    cmp.add_argument("--classes", help="comma-separated classes (default: every class folder)")
    cmp.add_argument("--concepts", help="comma-separated concept folder names (default: all under concepts/)")
    _add_config_flags(cmp)

    mea = sub.add_parser("measures", help="compute a pyradiomics feature table to CSV",
                         description="Compute pyradiomics features for every image (and mask) into a CSV table.")
    mea.add_argument("images", metavar="IMAGES", help="image folder (searched recursively)")
    mea.add_argument("--masks", help="mask folder mirroring IMAGES (default: whole image)")
    mea.add_argument("--params", help="pyradiomics YAML parameter file (default: the toolkit's 2D defaults)")
    mea.add_argument("--channel", default="gray", help="gray, r, g, b or hematoxylin (default: %(default)s)")
    mea.add_argument("--out", default="measures.csv", help="output CSV (default: %(default)s)")
    mea.add_argument("--jobs", type=int, default=None, help="parallel workers (default: all cores)")
    mea.add_argument("--quiet", action="store_true", help="no progress bar")
    mea.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler: measure the images on its workers "
                     "(which must see the same files) instead of local processes")

    man = sub.add_parser("manifest", help="write or check a data manifest (SHA-256 of every file)",
                         description="Write a manifest of DATA_DIR into data_manifests/, or check a manifest.")
    man.add_argument("data", metavar="DATA_DIR", nargs="?", help="data folder to describe (or to check against)")
    man.add_argument("--out", help="manifest path (default: data_manifests/<folder name>.json)")
    man.add_argument("--name", help="manifest name (default: the folder name)")
    man.add_argument("--check", metavar="MANIFEST", help="verify DATA_DIR (default: the manifest's root) against "
                                                         "MANIFEST and list changed, vanished and new files")

    lay = sub.add_parser("layers", help="list a model's layers, their shapes and the suggested probe points",
                         description="Print every layer of a saved model (nested models as outer/inner) with its "
                                     "output shape, width, whether it can be probed, and the suggested layers "
                                     "(block and stage ends). The paths are what --layers takes.")
    lay.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras or .h5)")
    lay.add_argument("--suggested", action="store_true", help="only the suggested layers")
    lay.add_argument("--output", help="the explained output of a multi-output model (name or index)")

    cache = sub.add_parser("cache", help="show, verify or clear the on-disk cache",
                           description="info: where the cache is and what it holds; verify: check every byte of "
                                       "every entry and remove damaged ones (exit 1 if any); clear: remove every "
                                       "entry the toolkit wrote (activations, vectors, results, radiomics).")
    cache.add_argument("action", choices=["info", "verify", "clear"])
    cache.add_argument("--dir", help="cache folder (default: $CONCEPTS_CACHE_DIR or ~/.cache/concepts-toolkit)")

    demo = sub.add_parser("demo", help="build the real-data demo, train its model and write its report",
                          description="Build a demo case from real medical images shipped in installed packages, "
                                      "train a small CNN (cached) and write the concept report.")
    demo.add_argument("--case", choices=["histology", "mri", "mri3d"], default="histology",
                      help="mri3d: MRI volumes and a 3D CNN (default: %(default)s)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--small", action="store_true", help="reduced size (for tests and quick looks)")
    demo.add_argument("--n-random", type=int, default=None, help="random runs (default: the case's setting)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _fail(message: str) -> int:
    print(f"concepts: error: {message}", file=sys.stderr)
    return 2


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (``path`` excluded) when it is not a folder, else None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _check_out_dir(out: str) -> str | None:
    """Why ``--out`` cannot be the output folder (checked before any compute), or None."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        return (f"--out {out!r} is a file, not a folder; the output is a folder of files. Give a new or existing "
                "folder, e.g. --out results/ (nothing was computed).")
    blocker = _blocking_file(path)
    if blocker is not None:
        return (f"--out {out!r} lies below {str(blocker)!r}, which is a file, not a folder; give an output folder "
                "whose parents are folders (nothing was computed).")
    return None


def _check_out_file(out: str) -> str | None:
    """Why ``--out`` cannot be the output file (checked before any compute), or None."""
    path = Path(out).expanduser()
    if path.is_dir():
        return (f"--out {out!r} is a folder; give a file path for the table, e.g. --out {str(path / 'measures.csv')!r} "
                "(nothing was computed).")
    blocker = _blocking_file(path)
    if blocker is not None:
        return (f"--out {out!r} lies below {str(blocker)!r}, which is a file, not a folder; give a CSV path whose "
                "parents are folders (nothing was computed).")
    return None


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_model_file(path: str) -> str | None:
    """Why ``path`` is not a loadable saved Keras model, judged from the file itself, or None."""
    p = Path(path)
    if not p.exists():
        return f"model file {path!r} does not exist; give a saved Keras model (.keras or .h5)."
    if p.is_dir():
        return (f"model path {path!r} is a folder, not a Keras model file; give the file written by "
                "model.save('model.keras') (a TensorFlow SavedModel folder cannot be loaded: re-save it as .keras).")
    suffix = p.suffix.lower()
    if suffix == ".keras":
        import zipfile

        ok = zipfile.is_zipfile(p)
    elif suffix in (".h5", ".hdf5"):
        try:
            with open(p, "rb") as handle:
                head = handle.read(8)
                ok = head == _HDF5_SIGNATURE
                offset = 512  # an HDF5 file may start with a user block of 512, 1024, 2048, ... bytes
                while not ok and offset < p.stat().st_size:
                    handle.seek(offset)
                    ok = handle.read(8) == _HDF5_SIGNATURE
                    offset *= 2
        except OSError as exc:
            return f"cannot read model file {path!r} ({exc})."
    else:
        return None  # left to Keras, which names the formats it reads
    if not ok:
        return (f"{path!r} exists but is not a Keras model file (.keras is a zip archive; .h5 an HDF5 file); "
                "give a model saved with model.save('model.keras'), or check that the file was copied completely.")
    return None


def _class_args(data: Path, text: str | None) -> list[str | int] | None:
    """``--classes`` items; an all-digit item that is not a class name of ``data`` is an output index."""
    items = _split(text)
    if items is None:
        return None
    names: set[str] = set()
    for candidate in (data / "classes.txt", data / "classes" / "classes.txt"):
        if candidate.is_file():
            try:
                names |= {line.strip() for line in candidate.read_text(encoding="utf-8").splitlines() if line.strip()}
            except (OSError, UnicodeDecodeError):
                pass
            break
    if (data / "classes").is_dir():
        names |= {child.name for child in (data / "classes").iterdir() if child.is_dir()}
    return [int(item) if item.isdigit() and item not in names else item for item in items]


def _client(address: str | None):
    """A ``dask.distributed.Client`` for ``--scheduler ADDRESS`` (None without one)."""
    if not address:
        return None
    try:
        from dask.distributed import Client
    except ImportError:
        raise SystemExit(_fail("--scheduler needs Dask: pip install 'concepts-toolkit[distributed]'.")) from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise SystemExit(_fail(f"cannot reach the Dask scheduler at {address!r} ({exc}); start one with "
                               "'dask scheduler' (and 'dask worker ADDRESS' on each machine).")) from None


def _cmd_report(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # a bad option fails before the model is loaded
    data = Path(args.data)
    if not data.is_dir():
        return _fail(f"data folder {str(data)!r} does not exist; give the folder that holds classes/ and concepts/.")
    problem = _check_model_file(args.model)
    if problem:
        return _fail(problem)
    layers = _split(args.layers)
    if not layers:
        return _fail(f"--layers {args.layers!r} names no layer; give comma-separated layer names, e.g. "
                     "--layers conv1,conv2.")
    problem = _check_out_dir(args.out)
    if problem:
        return _fail(problem)
    import keras

    from .reporting import report

    try:
        model = keras.models.load_model(args.model, compile=False)
    except Exception as exc:  # not a Keras file, a damaged archive, an unknown custom layer, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _fail(f"cannot load model file {args.model!r} as a Keras model ({reason}); give a model saved "
                     "with model.save('model.keras').")
    client = _client(args.scheduler)
    measures = None
    if args.measures:
        from .measures import radiomics

        masks = args.masks or (str(data / "masks") if (data / "masks").is_dir() else None)
        measures = [radiomics(f, images=data / "classes", masks=masks, channel=args.channel,
                              progress=config.progress, client=client)
                    for f in _split(args.measures)]
    concepts_arg = None
    if args.concepts:
        concepts_arg = [data / "concepts" / c for c in _split(args.concepts)]
    rep = report(model, layers, concepts=concepts_arg, classes=_class_args(data, args.classes), data=data,
                 measures=measures, sanity=args.sanity, client=client, config=config,
                 title=f"Concept report: {Path(args.model).name} on {data.name}")
    if client is not None:
        client.close()
    written = rep.save(args.out)
    print(rep)
    from .report_examples import driven_examples_text

    examples = driven_examples_text(rep)
    if examples:
        print("\ncases most and least driven by each significant concept (sensitivity):")
        print("\n".join(f"  {line}" for line in examples))
    print(f"\nreport: {written['html'].resolve()}")
    return 0


def _load_model(path: str):
    """A Keras model from ``path``, or an error string naming the file and how to fix it."""
    import keras

    problem = _check_model_file(path)
    if problem:
        return problem
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # not a Keras file, a damaged archive, an unknown custom layer, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"cannot load model file {path!r} as a Keras model ({reason}); give a model saved with model.save(...)."


def _named(items: list[str], what: str) -> dict[str, str] | str:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            return f"--{what} {item!r} is not NAME=VALUE; write e.g. --{what} baseline=model_a.keras."
        if name.strip() in out:
            return f"--{what} names {name.strip()!r} twice; give every model a distinct name."
        out[name.strip()] = value.strip()
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # a bad option fails before any model is loaded
    data = Path(args.data)
    if not data.is_dir():
        return _fail(f"data folder {str(data)!r} does not exist; give the folder that holds classes/ and concepts/.")
    files = _named(args.model, "model")
    if isinstance(files, str):
        return _fail(files)
    if len(files) < 2:
        return _fail("give at least two models to compare: --model baseline=a.keras --model candidate=b.keras.")
    shared = [item for item in args.layers if "=" not in item]
    named = _named([item for item in args.layers if "=" in item], "layers")
    if isinstance(named, str):
        return _fail(named)
    unknown = sorted(set(named) - set(files))
    if unknown:
        return _fail(f"--layers names model(s) {unknown}, but the models are {sorted(files)}.")
    layers: dict[str, list[str]] = {}
    for name in files:
        spec = named.get(name, shared[-1] if shared else None)
        if spec is None or not _split(spec):
            return _fail(f"no layers for model {name!r}: give --layers conv1,conv2 (every model) or "
                         f"--layers {name}=conv1,conv2.")
        layers[name] = _split(spec)
    problem = _check_out_dir(args.out)
    if problem:
        return _fail(problem)
    for path in files.values():  # every path is checked before the first model is loaded
        problem = _check_model_file(path)
        if problem:
            return _fail(problem)
    models = {}
    for name, path in files.items():
        model = _load_model(path)
        if isinstance(model, str):
            return _fail(model)
        models[name] = model
    from .comparison import compare

    concepts_arg = [data / "concepts" / c for c in _split(args.concepts)] if args.concepts else None
    comparison = compare(models, layers, concepts_arg, _class_args(data, args.classes), data=data, config=config,
                         title=f"Model comparison: {', '.join(files)} on {data.name}")
    written = comparison.save(args.out)
    print(comparison)
    for note in comparison.notes():
        print(note)
    print(f"\ncomparison: {written['html'].resolve()}")
    return 0


def _cmd_measures(args: argparse.Namespace) -> int:
    if not Path(args.images).is_dir():
        return _fail(f"image folder {args.images!r} does not exist.")
    problem = _check_out_file(args.out)
    if problem:
        return _fail(problem)
    from .measures import measure_table

    client = _client(args.scheduler)
    try:
        table = measure_table(args.images, masks=args.masks, params=args.params, channel=args.channel,
                              n_jobs=args.jobs, progress=not args.quiet, client=client)
    finally:
        if client is not None:
            client.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index_label="image")
    failures = table.attrs.get("failures", [])
    print(f"{len(table)} images x {table.shape[1]} features -> {out}"
          + (f" ({len(failures)} failures reported)" if failures else ""))
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from .manifests import check_manifest, write_manifest

    if args.check:
        result = check_manifest(args.check, args.data)
        print(result)
        return 0 if result.ok else 1
    if not args.data:
        return _fail("give the data folder to describe: concepts manifest DATA_DIR (or --check MANIFEST).")
    if not Path(args.data).is_dir():
        return _fail(f"data folder {args.data!r} does not exist.")
    path = write_manifest(args.data, args.out, name=args.name, preprocessing="default_preprocess")
    print(f"manifest written: {path}")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    problem = _check_model_file(args.model)
    if problem:
        return _fail(problem)
    import pandas as pd

    from .layer_browser import layers

    output = int(args.output) if args.output is not None and args.output.lstrip("-").isdigit() else args.output
    table = layers(args.model, output=output, suggested_only=args.suggested)
    table = table.assign(probeable=table["probeable"].map({True: "yes", False: "no"}),
                         suggested=table["suggested"].map({True: "*", False: ""}),
                         stage_end=table["stage_end"].map({True: "stage", False: ""}))
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 80, "display.width", 200):
        print(table.drop(columns=["depth"]).to_string(index=False))
    n_suggested = (table["suggested"] == "*").sum()
    print(f"\n{len(table)} layers; {n_suggested} suggested (*), stage ends marked 'stage'. "
          "Pass a path to --layers (concepts report) or to concepts.score(model, PATH, ...).")
    return 0


def _human(n: int | None) -> str:
    if n is None:
        return "no cap"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _cmd_cache(args: argparse.Namespace) -> int:
    from probes.cache import Store, default_cache_dir

    root = Path(args.dir).expanduser() if args.dir else default_cache_dir()
    try:
        store = Store(root)
    except ValueError as exc:  # a malformed $CONCEPTS_CACHE_MAX
        return _fail(str(exc))
    if root.exists() and not root.is_dir():
        done = "cleared" if args.action == "clear" else "read"
        return _fail(f"{root} is a file, not a cache folder; nothing was {done}. Pass the folder the "
                     "cache lives in with --dir (or set CONCEPTS_CACHE_DIR); the default is "
                     "~/.cache/concepts-toolkit.")
    # Radiomics features are store entries now; files of the former layout are removed by clear.
    legacy = root / "radiomics"
    radiomics_files = sorted(legacy.glob("*.json")) if legacy.is_dir() else []
    if args.action == "info":
        info = store.info()
        print(f"cache folder: {root}{'' if root.is_dir() else ' (does not exist yet)'}")
        print(f"entries: {info['entries']} ({_human(info['bytes'])}), size cap: {_human(info['max_bytes'])} "
              "($CONCEPTS_CACHE_MAX)")
        for kind, size in info["bytes_by_kind"].items():
            print(f"  {kind}: {_human(size)}")
        if radiomics_files:
            print(f"radiomics files of an older version: {len(radiomics_files)} (removed by 'concepts cache clear')")
        print(f"store format {info['format']}, package version {info['package_version']}")
        return 0
    if not root.exists() and args.action in ("verify", "clear"):
        if args.action == "verify":
            return _fail(f"no cache folder at {root}; nothing to verify. Check the path given with --dir (or "
                         "$CONCEPTS_CACHE_DIR); 'concepts cache info' shows where the cache lives.")
        print(f"no cache folder at {root}; nothing to clear.")
        return 0
    if args.action == "verify":
        problems = store.verify()
        for entry, problem in problems:
            print(f"damaged (removed): {entry}: {problem}")
        print(f"verified {root}: {len(problems)} damaged entr{'y' if len(problems) == 1 else 'ies'} removed "
              "(recomputed when next needed)" if problems else f"verified {root}: every entry is intact")
        return 1 if problems else 0
    n = sum(1 for _ in store.entries())
    store.clear()
    for path in radiomics_files:
        path.unlink(missing_ok=True)
    if radiomics_files:
        try:
            legacy.rmdir()
        except OSError:
            pass  # something else lives there
    print(f"cleared {root}: {n} entries removed" + (f" and {len(radiomics_files)} older radiomics files"
                                                   if radiomics_files else ""))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    html = run_demo(case=args.case, out_dir=args.out, size="small" if args.small else "full",
                    n_random=args.n_random, progress=not args.quiet)
    print(f"\nreport: {Path(html).resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``concepts`` console script.

    Examples
    --------
    >>> main(["manifest", "data", "--out", "manifest.json"])
    manifest written: manifest.json
    0
    >>> main(["manifest", "--check", "manifest.json"])
    Manifest manifest.json vs 'data': OK, all 133 files match.
    0
    >>> main(["layers", "model.keras", "--suggested"])
     path                  class output_shape  width probeable why_not suggested stage_end
    conv2                 Conv2D  (14, 14, 4)    784       yes                 *     stage
      gap GlobalAveragePooling2D          (4)      4       yes                 *     stage
    <BLANKLINE>
    2 layers; 2 suggested (*), stage ends marked 'stage'. Pass a path to --layers (concepts report) or to ...
    0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # TensorFlow C++ start-up logs (e.g. "failed call to cuInit" on every machine without a GPU) are
    # noise for a command-line user; Python errors still surface. Set the variable to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .errors import ToolkitError

    commands = {"report": _cmd_report, "compare": _cmd_compare, "measures": _cmd_measures,
                "manifest": _cmd_manifest, "demo": _cmd_demo, "layers": _cmd_layers, "cache": _cmd_cache}
    try:
        return commands[args.command](args)
    except ToolkitError as exc:
        return _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
