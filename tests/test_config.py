"""One vocabulary across the public API: ``concepts.Config``, renamed keywords and the ranking's result type.

* ``Config`` is validated on construction with messages that say how to fix a value;
* every public function (and the CLI) has the same option names and the same defaults as ``Config``
  (introspected, so a differing default added later fails here);
* explicit keywords win over ``config=``, which wins over the defaults;
* renamed keywords still work with a ``FutureWarning`` and give the same result;
* ``rank_measures`` returns a result object, and DataFrame use of it still works with a warning.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.config import Config, uses_config  # noqa: E402
from concepts.validation import PARAMETER_CONSTRAINTS, OptionError  # noqa: E402

FAST = dict(n_random=4, n_directions=100, progress=False, cache_dir=False)


def _public_functions():
    from concepts.comparison import compare
    from concepts.ranking import rank_measures
    from concepts.reporting import report
    from concepts.scoring import score

    return [score, report, rank_measures, compare]


# ------------------------------------------------------------------------------------------ validation
def test_unknown_option_names_the_closest_one_and_lists_them_all():
    with pytest.raises(OptionError, match=r"Unknown option 'n_randoms' for concepts.Config. Did you mean "
                                          r"'n_random'\? The options are: n_random, "):
        Config(n_randoms=6)
    with pytest.raises(OptionError, match="Did you mean 'significance'"):
        Config().replace(significnce=0.01)


@pytest.mark.parametrize("option, value, expected", [
    ("n_random", "ten", r"^n_random='ten' is not valid: expected an integer with 3 <= x. The default is n_random=20."),
    ("n_random", 2, r"expected an integer with 3 <= x"),
    ("significance", 5, r"0 < x < 1. The default is significance=0.05"),
    ("correction", "holmes", r"Did you mean 'holm'\?"),
    ("progress", "yes", r"True or False"),
    ("alpha", -1.0, r"'auto' or a number with 0 < x"),
])
def test_bad_values_say_what_is_allowed_and_the_default(option, value, expected):
    with pytest.raises(OptionError, match=expected):
        Config(**{option: value})
    with pytest.raises(OptionError, match=expected):
        Config().replace(**{option: value})


def test_options_are_given_by_name():
    with pytest.raises(OptionError, match=r"by name, e.g. Config\(n_random=50"):
        Config(50)


def test_repr_shows_what_differs_and_replace_returns_a_new_config():
    base = Config(n_random=50, correction="bh")
    assert repr(base) == "Config(n_random=50, correction='bh')"
    assert repr(Config()) == "Config()"
    changed = base.replace(seed=3)
    assert (base.seed, changed.seed, changed.n_random) == (0, 3, 50)
    assert changed.changed() == {"n_random": 50, "seed": 3, "correction": "bh"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 1  # type: ignore[misc]


def test_every_option_is_constrained_in_the_one_table():
    assert not set(Config.names()) - set(PARAMETER_CONSTRAINTS)


# ------------------------------------------------------------------------------------------ one default each
@pytest.mark.parametrize("function", _public_functions(), ids=lambda f: f.__name__)
def test_every_public_function_has_configs_names_and_defaults(function):
    parameters = inspect.signature(function).parameters
    assert "config" in parameters and parameters["config"].default is None
    shared = [name for name in parameters if name in Config.names()]
    assert shared, function.__name__
    for name in shared:
        assert parameters[name].default == Config.default(name), (
            f"{function.__name__}({name}={parameters[name].default!r}) differs from Config's default "
            f"{Config.default(name)!r}: change concepts/config.py, not one function")
    # Every keyword is a Config option or an input checked by validate_options.
    assert not set(parameters) - {"model"} - set(PARAMETER_CONSTRAINTS), function.__name__


def test_configs_defaults_are_the_analysis_defaults():
    from concepts.analysis import DEFAULT_CAV, DEFAULT_STATISTIC, Options

    assert Config.default("cav") == DEFAULT_CAV and Config.default("statistic") == DEFAULT_STATISTIC
    options = Config().to_options()
    for field in dataclasses.fields(Options):
        if field.name in Config.names():
            assert getattr(options, field.name) == field.default, field.name
    assert {f.name for f in dataclasses.fields(Options)} - set(Config.names()) == {"n_boot"}


def test_rank_measures_uses_the_shared_n_random_default():
    from concepts.ranking import rank_measures

    assert inspect.signature(rank_measures).parameters["n_random"].default == 20 == Config.default("n_random")


def test_significance_is_the_level_everywhere_and_alpha_only_the_ridge_penalty():
    from concepts import explain_plots, plots, report_html
    from concepts.reporting import Report

    for function in (plots.is_significant, plots.plot_heatmap, plots.plot_layer_profile,
                     report_html.summarize_findings, report_html.render_html, Report.plot_heatmap,
                     Report.plot_layer_profile):
        parameters = inspect.signature(function).parameters
        assert "significance" in parameters and "alpha" not in parameters, function.__qualname__
    for function in (explain_plots.plot_concept_maps, explain_plots.plot_driven_examples, Report.plot_concept_maps):
        assert "opacity" in inspect.signature(function).parameters, function.__qualname__
    for function in _public_functions():
        parameters = inspect.signature(function).parameters
        if "alpha" in parameters:  # rank_measures fits no CAV
            assert parameters["alpha"].default == "auto"  # the ridge penalty of cav="ridge"
        assert "random_state" not in parameters and "seed" in parameters


# ------------------------------------------------------------------------------------------ precedence
def test_explicit_keywords_win_over_config_which_wins_over_defaults():
    @uses_config
    def run(data: str | None = None, *, n_random: int = 20, seed: int = 0, config: Config | None = None):
        return config, n_random, seed

    config, n_random, seed = run(config=Config(n_random=40, seed=2, correction="bh"))
    assert (config.n_random, n_random, seed, config.correction) == (40, 40, 2, "bh")
    config, n_random, _ = run(n_random=7, config=Config(n_random=40))
    assert (config.n_random, n_random) == (7, 7)
    config, n_random, _ = run(n_random=20, config=Config(n_random=40))  # explicit, even if equal to the default
    assert n_random == 20
    assert run()[0] == Config()
    with pytest.raises(OptionError, match="^n_random=2 is not valid"):
        run(n_random=2)
    with pytest.raises(OptionError, match="config=dict is not valid: expected a concepts.Config"):
        run(config={"n_random": 40})
    with pytest.raises(OptionError, match="^data=3 is not valid"):
        run(data=3)


def test_compare_validates_its_options_before_any_compute():
    with pytest.raises(OptionError, match="^n_random=2 is not valid"):
        concepts.compare({"a": None, "b": None}, ["conv1"], n_random=2)
    with pytest.raises(OptionError, match="^correction='holmes'"):
        concepts.compare({"a": None, "b": None}, ["conv1"], correction="holmes")


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_flags_map_to_config():
    from concepts.cli import CONFIG_FLAGS, _parser, config_from_args

    assert set(CONFIG_FLAGS) <= set(Config.names())
    base = ["report", "data", "--model", "m.keras", "--layers", "conv1"]
    assert config_from_args(_parser().parse_args(base)) == Config()
    args = _parser().parse_args(base + ["--n-random", "30", "--null-pairs", "ring", "--statistic", "ubs",
                                        "--target", "prob", "--cav", "ridge", "--correction", "bh",
                                        "--significance", "0.01", "--seed", "4", "--batch-size", "8",
                                        "--cache-dir", "/tmp/c", "--memory-budget", "1GB", "--on-error", "skip",
                                        "--quiet"])
    assert config_from_args(args) == Config(n_random=30, null_pairs="ring", statistic="ubs", target="prob",
                                            cav="ridge", correction="bh", significance=0.01, seed=4,
                                            batch_size=8, cache_dir="/tmp/c", memory_budget="1GB",
                                            on_error="skip", progress=False)
    compare_args = _parser().parse_args(["compare", "data", "--model", "a=a.keras", "--model", "b=b.keras",
                                         "--layers", "conv1", "--seed", "5", "--quiet"])
    assert config_from_args(compare_args) == Config(seed=5, progress=False)


def test_cli_bad_option_is_a_one_line_error(tmp_path, capsys):
    from concepts.cli import main

    code = main(["report", str(tmp_path), "--model", "m.keras", "--layers", "conv1", "--significance", "2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "significance=2.0 is not valid" in lines[0]


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from synthetic import make_data

    return make_data(tmp_path_factory.mktemp("config") / "data", n_class=8, n_concept=10, n_pool=40)


@pytest.fixture(scope="module")
def model():
    from synthetic import build_model

    return build_model()


def test_config_gives_the_same_table_as_keywords_and_plural_keywords_work(model, data):
    horizontal, vertical = data / "concepts" / "horizontal", data / "concepts" / "vertical"
    by_keywords = concepts.score(model, "conv1", [horizontal, vertical], seed=1, **FAST).to_frame()
    by_config = concepts.score(model, "conv1", [horizontal, vertical], config=Config(seed=1, **FAST)).to_frame()
    plural = concepts.score(model, layers=["conv1"], concepts=[horizontal, vertical], config=Config(seed=1, **FAST))
    pd.testing.assert_frame_equal(by_keywords.drop(columns="elapsed_s", errors="ignore"),
                                  by_config.drop(columns="elapsed_s", errors="ignore"))
    pd.testing.assert_frame_equal(by_keywords.drop(columns="elapsed_s", errors="ignore"),
                                  plural.to_frame().drop(columns="elapsed_s", errors="ignore"))
    overridden = concepts.score(model, "conv1", horizontal, n_random=3, config=Config(seed=1, **FAST))
    assert overridden.provenance["n_random_runs"] == 3


def test_report_takes_one_layer_name_and_the_deprecated_alpha_level_warns(model, data):
    rep = concepts.report(model, "conv1", [data / "concepts" / "horizontal"], config=Config(**FAST))
    assert set(rep.to_frame()["layer"]) == {"conv1"}
    with pytest.warns(FutureWarning, match="alpha= is now called significance="):
        old = rep.plot_heatmap(alpha=0.01)
    new = rep.plot_heatmap(significance=0.01)
    assert [t.get_text() for t in old.legends[0].get_texts()] == [t.get_text() for t in new.legends[0].get_texts()]
    from concepts.report_html import render_html

    with pytest.warns(FutureWarning, match="render_html"):
        page_old = render_html(rep.to_frame(), title="t", alpha=0.2)
    assert page_old == render_html(rep.to_frame(), title="t", significance=0.2)


def test_rank_measures_returns_a_result_and_old_dataframe_use_warns(model, data):
    files = sorted((data / "classes").rglob("*.png"))
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"noise": rng.normal(size=len(files)), "other": rng.normal(size=len(files))},
                         index=[str(f) for f in files])
    ranking = concepts.rank_measures(model, "conv1", table, config=Config(**FAST))
    assert isinstance(ranking, concepts.Ranking) and isinstance(ranking, concepts.Report)
    frame = ranking.to_frame()
    assert list(frame.groupby("class")["rank"].apply(list).iloc[0]) == [1, 2]
    assert len(ranking) == len(frame)
    assert "<b>Ranking</b>" in ranking._repr_html_()
    assert set(ranking.significant["concept"]) <= {"noise", "other"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranking.to_frame(), ranking.provenance, len(ranking)  # the new API never warns
    with pytest.warns(FutureWarning, match=r"rank_measures now returns a result object \(Ranking\); call "
                                           r"\.to_frame\(\)"):
        column = ranking["concept"]
    assert list(column) == list(frame["concept"])
    with pytest.warns(FutureWarning, match="to_frame"):
        pd.testing.assert_frame_equal(ranking.head(2), frame.head(2))
    with pytest.warns(FutureWarning):
        assert isinstance(ranking.attrs, dict)
    with pytest.warns(FutureWarning):
        assert list(ranking) == list(frame.columns)
    with pytest.raises(AttributeError):
        ranking.no_such_thing


def test_former_alpha_for_an_overlays_opacity_warns_and_draws_the_same():
    from concepts.explain_plots import plot_concept_maps

    images, maps = np.zeros((2, 8, 8)), np.linspace(-1, 1, 128).reshape(2, 8, 8)
    with pytest.warns(FutureWarning, match="alpha= is now called opacity="):
        old = plot_concept_maps(images, maps, alpha=0.3)
    new = plot_concept_maps(images, maps, opacity=0.3)
    assert [im.get_alpha() for im in old.axes[0].images] == [im.get_alpha() for im in new.axes[0].images] == [None, 0.3]
