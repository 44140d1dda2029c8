"""The objective registry: built-in benchmarks, scikit-learn models, project objectives."""

from __future__ import annotations

import math

import optuna
import pytest

from studies.config.errors import ConfigError
from studies.objectives import builtin, objective
from studies.objectives.registry import get_objective, get_objectives

# A project's own objectives, registered through settings.HUB_OBJECTIVES below.


@objective(
    "project_parabola",
    search_space={"a": {"type": "float", "low": -3, "high": 3}},
    description="(a - 1)^2",
)
def project_parabola(trial: optuna.Trial, params: dict) -> float:
    return (params["a"] - 1) ** 2


def plain_function(trial: optuna.Trial) -> float:
    """Samples its own parameter."""
    return trial.suggest_float("z", 0, 1)


def run(name: str, n_trials: int, *, space: dict | None = None, **study_kwargs) -> optuna.Study:
    info = get_objective(name)
    assert info is not None, name
    study = optuna.create_study(directions=info.directions, **study_kwargs)
    study.optimize(info.make_objective(space), n_trials=n_trials)
    return study


def test_it_lists_benchmarks_and_scikit_learn_models_with_their_default_space(db):
    objectives = get_objectives()
    for name in ["sphere", "rosenbrock", "branin", "ackley", "binh_korn", "zdt1"]:
        assert objectives[name].kind == "builtin"
    for name in ["digits_svc", "breast_cancer_forest", "digits_sgd"]:
        assert objectives[name].kind == "sklearn"
    listed = objectives["branin"].to_dict()
    assert listed["directions"] == ["minimize"]
    assert listed["search_space"]["x0"] == {"type": "float", "low": -5.0, "high": 10.0}
    assert objectives["binh_korn"].directions == ["minimize", "minimize"]
    assert objectives["sphere"].to_dict()["options"]["dimension"]["default"] == 2


def test_a_dimension_suffix_picks_the_dimension_of_a_benchmark(db):
    info = get_objective("rosenbrock:7")
    assert info is not None and list(info.search_space) == [f"x{i}" for i in range(7)]
    assert get_objective("branin:3") is None  # branin is two-dimensional only
    assert get_objective("sphere:0") is None
    assert get_objective("sphere:101") is None
    assert get_objective("nonsense") is None


def test_benchmarks_have_their_known_optima():
    assert builtin.sphere([0.0, 0.0, 0.0]) == 0
    assert builtin.rosenbrock([1.0, 1.0, 1.0]) == 0
    assert abs(builtin.ackley([0.0, 0.0])) < 1e-12
    assert math.isclose(builtin.branin([math.pi, 2.275]), 0.397887, abs_tol=1e-6)
    assert builtin.binh_korn([0.0, 0.0]) == (0, 50)
    f1, f2 = builtin.zdt1([0.25, 0, 0, 0])
    assert f1 == 0.25 and math.isclose(f2, 0.5)


def test_a_benchmark_evaluates_every_parameter_of_a_declared_space(db):
    space = {f"p{i}": {"type": "float", "low": 2, "high": 2.5} for i in range(5)}
    study = run("sphere", 3, space=space)
    for trial in study.trials:
        assert list(trial.params) == list(space)
        assert math.isclose(trial.value, sum(v * v for v in trial.params.values()))


def test_an_objective_rejects_a_declared_space_it_cannot_evaluate(db):
    categorical = {"c": {"type": "categorical", "choices": ["a", "b"]}}
    with pytest.raises(ConfigError) as e:
        get_objective("sphere").validate_for(["minimize"], categorical)
    assert e.value.field == "search_space.c"
    with pytest.raises(ConfigError) as e:
        get_objective("branin").validate_for(
            ["minimize"], {"x": {"type": "float", "low": 0, "high": 1}}
        )
    assert "exactly 2" in e.value.message
    with pytest.raises(ConfigError) as e:
        get_objective("digits_svc").validate_for(
            ["maximize"], {"depth": {"type": "int", "low": 1, "high": 3}}
        )
    assert e.value.field == "search_space.depth"
    with pytest.raises(ConfigError) as e:
        get_objective("binh_korn").validate_for(["minimize"], {})
    assert e.value.field == "objective" and "2 value(s)" in e.value.message


def test_a_tpe_search_gets_near_the_optimum_of_branin(db):
    study = run("branin", 60, sampler=optuna.samplers.TPESampler(seed=0))
    assert study.best_value < 1.0  # the optimum is 0.397887


def test_a_two_objective_benchmark_returns_two_values(db):
    study = run("binh_korn", 5)
    assert all(len(t.values) == 2 for t in study.trials)


def test_the_digits_classifier_reaches_a_real_accuracy(db):
    study = run(
        "digits_svc",
        1,
        space={
            "C": {"type": "float", "low": 10, "high": 10},
            "gamma": {"type": "float", "low": 0.001, "high": 0.001},
        },
    )
    assert study.best_value > 0.9


def test_the_sgd_classifier_reports_every_epoch_so_pruners_act(db):
    study = run(
        "digits_sgd",
        12,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete[0].intermediate_values) == 20
    assert all(0 <= v <= 1 for v in complete[0].intermediate_values.values())
    pruned = study.get_trials(states=[optuna.trial.TrialState.PRUNED])
    assert pruned and all(len(t.intermediate_values) < 20 for t in pruned)


def test_projects_register_objectives_by_dotted_path(db, settings):
    settings.HUB_OBJECTIVES = [
        "tests.test_objectives.project_parabola",
        "tests.test_objectives.plain_function",
    ]
    objectives = get_objectives()
    assert objectives["project_parabola"].description == "(a - 1)^2"
    assert objectives["project_parabola"].kind == "project"
    assert objectives["plain_function"].description == "Samples its own parameter."
    study = run("project_parabola", 20, sampler=optuna.samplers.TPESampler(seed=0))
    assert study.best_value < 0.1
    assert 0 <= run("plain_function", 1).best_value <= 1


def test_a_whole_module_registers_every_objective_in_it(db, settings):
    settings.HUB_OBJECTIVES = ["tests.test_objectives"]
    assert "project_parabola" in get_objectives()


def test_a_dotted_path_that_does_not_import_is_a_clear_error(db, settings):
    settings.HUB_OBJECTIVES = ["tests.nowhere.objective"]
    with pytest.raises(ConfigError) as e:
        get_objectives()
    assert e.value.field == "HUB_OBJECTIVES" and "tests.nowhere.objective" in e.value.message
