"""Chart JSON: what each chart draws, how it stays small, and how it is cached."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from optuna.trial import TrialState

from benchmarks.pages import make_study as make_large_study
from studies import charts
from studies.charts import limits
from studies.models import Study
from studies.storage import optuna_study_for

SPACE = {
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "rate_drop": {"type": "float", "low": 0.0, "high": 1.0, "when": {"booster": ["dart"]}},
}
# The entry file of the hub's plotly.js bundle: it registers only these trace types.
BUNDLE_ENTRY = Path(__file__).resolve().parent.parent / "studies/vendor/plotly/index.js"
DTYPES = {"f8": "<f8", "f4": "<f4", "i1": "i1", "i2": "<i2", "i4": "<i4", "u1": "u1", "u2": "<u2"}


@pytest.fixture(autouse=True)
def fresh_chart_caches() -> None:
    # Test databases reuse ids after each rollback; a real hub never does.
    cache.clear()
    charts.trial_data_cache.entries.clear()


def array(value: Any) -> np.ndarray:
    """A trace's data array, whether Plotly sent it as a list or as base64."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), DTYPES[value["dtype"]])
    return np.asarray(value)


def make_study(alice: Any, directions: tuple[str, ...] = ("minimize",), **fields: Any) -> Study:
    return Study.objects.create(
        name=fields.pop("name", "charts"),
        owner=alice,
        directions=list(directions),
        search_space=SPACE,
        sampler={"type": "random", "options": {}, "seed": 3},
        **fields,
    )


def run_trials(study: Study, n: int) -> optuna.Study:
    """Real trials on the hub's storage: complete, pruned (with reports) and failed ones."""
    from studies.config.search_space import suggest

    optuna_study = optuna_study_for(study)

    def objective(trial: optuna.Trial) -> Any:
        params = suggest(trial, study.search_space)
        value = params["x"] ** 2 + abs(np.log10(params["lr"]) + 2)
        if trial.number % 11 == 10:
            raise RuntimeError("boom")
        if len(study.directions) > 1:
            return value, params["x"]  # Optuna has no reports for several objectives
        for step in range(4):
            trial.report(value + 1 / (step + 1), step)
        if trial.number % 7 == 6:
            raise optuna.TrialPruned()
        return value

    optuna_study.optimize(objective, n_trials=n, catch=(RuntimeError,))
    return optuna_study


def get_chart(client: Any, study: Study, name: str, **params: Any) -> dict[str, Any]:
    response = client.get(reverse("studies:chart", args=[study.pk, name]), params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def test_each_chart_draws_the_trials_of_a_small_study(logged_in, alice):
    study = make_study(alice)
    optuna_study = run_trials(study, 30)
    complete = optuna_study.get_trials(states=(TrialState.COMPLETE,))
    for name in ("history", "importances", "parallel", "slice", "contour", "edf",
                 "intermediate", "timeline"):  # fmt: skip
        body = get_chart(logged_in, study, name)
        assert body["empty"] == "" and body["figure"]["data"], name
        # Nothing was left out at this size.
        assert "sample" not in body["note"] and "Showing" not in body["note"], name

    history = get_chart(logged_in, study, "history")["figure"]["data"]
    points, best = history
    assert sorted(array(points["x"]).tolist()) == sorted(t.number for t in complete)
    assert array(best["y"])[-1] == pytest.approx(optuna_study.best_value)
    assert np.all(np.diff(array(best["y"])) <= 0)  # minimizing: the best only goes down

    parallel = get_chart(logged_in, study, "parallel")["figure"]["data"][0]
    labels = [d["label"] for d in parallel["dimensions"]]
    assert labels == ["Objective value", "booster", "x", "lr", "rate_drop"]
    rate_drop = parallel["dimensions"][4]
    assert rate_drop["ticktext"][0] == "(absent)"  # gbtree trials have no rate_drop

    importances = get_chart(logged_in, study, "importances")["figure"]["data"][0]
    assert set(importances["y"]) == {"booster", "x", "lr", "rate_drop"}
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    expected = optuna.importance.get_param_importances(optuna_study, evaluator=evaluator)
    assert dict(zip(importances["y"], importances["x"], strict=True)) == pytest.approx(expected)

    edf = get_chart(logged_in, study, "edf")["figure"]["data"][0]
    assert array(edf["y"])[-1] == 1.0 and len(array(edf["x"])) == len(complete)

    timeline = get_chart(logged_in, study, "timeline")["figure"]["data"]
    drawn = {trace["name"]: len(array(trace["y"])) for trace in timeline}
    assert drawn == {"Complete": len(complete), "Pruned": 4, "Fail": 2}

    curves = get_chart(logged_in, study, "intermediate")["figure"]["data"]
    assert {trace["name"] for trace in curves} == {"Complete", "Pruned"}


def test_the_hubs_plotly_js_bundles_every_trace_type_the_charts_draw(logged_in, alice):
    entry = BUNDLE_ENTRY.read_text()
    bundled = set(re.findall(r"require\('plotly\.js/(?:lib|src/traces)/(\w+)", entry)) - {"core"}
    studies = [make_study(alice, d, name=str(d)) for d in [("minimize",), ("minimize", "maximize")]]
    bodies = []
    for study in studies:
        run_trials(study, 30)
        bodies += [get_chart(logged_in, study, name) for name, _ in charts.charts_for(study)]
    for pair in [("booster", "x"), ("lr", "x")]:  # a heatmap, a contour
        bodies.append(get_chart(logged_in, studies[0], "contour", x=pair[0], y=pair[1]))
    bodies.append(json.loads(charts.compare_chart(studies).to_json()))
    drawn = {trace["type"] for body in bodies if body["figure"] for trace in body["figure"]["data"]}
    # A type missing from the bundle draws an empty chart; one no chart draws is dead weight.
    assert drawn == bundled == {"scatter", "bar", "contour", "heatmap", "parcoords"}


def test_a_study_without_trials_gets_empty_states_not_errors(logged_in, alice):
    study = make_study(alice)
    for name, _title in charts.charts_for(study):
        body = get_chart(logged_in, study, name)
        assert body["figure"] is None and body["empty"], name


def test_the_contour_plots_the_chosen_pair_and_names_a_wrong_one(logged_in, alice):
    study = make_study(alice)
    run_trials(study, 25)
    body = get_chart(logged_in, study, "contour", x="lr", y="x")
    surface, dots = body["figure"]["data"]
    assert surface["type"] == "contour"
    assert body["figure"]["layout"]["xaxis"]["type"] == "log"
    assert body["figure"]["layout"]["xaxis"]["title"]["text"] == "lr"
    assert "binned 40 × 40" in body["note"]
    categorical = get_chart(logged_in, study, "contour", x="booster", y="x")
    assert categorical["figure"]["data"][0]["type"] == "heatmap"
    url = reverse("studies:chart", args=[study.pk, "contour"])
    response = logged_in.get(url, {"x": "nope", "y": "x"})
    assert response.status_code == 400
    assert response.json() == {"error": "'nope' is not a parameter of this study"}
    assert logged_in.get(url, {"x": "x", "y": "x"}).status_code == 400


def test_unknown_charts_and_bad_options_are_client_errors(logged_in, alice):
    study = make_study(alice)
    assert logged_in.get(reverse("studies:chart", args=[study.pk, "pie"])).status_code == 404
    url = reverse("studies:chart", args=[study.pk, "history"])
    assert logged_in.get(url, {"objective": "first"}).json()["error"] == (
        "objective must be a whole number"
    )
    assert logged_in.get(url, {"objective": 3}).json()["error"] == (
        "objective must be between 0 and 0"
    )


def test_multi_objective_charts_draw_the_pareto_front_and_hypervolume(logged_in, alice):
    study = make_study(alice, directions=("minimize", "maximize"))
    optuna_study = run_trials(study, 40)
    front = get_chart(logged_in, study, "pareto")["figure"]["data"]
    dominated, pareto = front
    expected = {t.number for t in optuna_study.best_trials}
    assert set(array(pareto["customdata"]).reshape(-1, 2)[:, 1].tolist()) == expected
    assert len(array(dominated["x"])) + len(expected) == len(
        optuna_study.get_trials(states=(TrialState.COMPLETE,))
    )
    history = get_chart(logged_in, study, "hypervolume")
    volumes = array(history["figure"]["data"][0]["y"])
    assert np.all(np.diff(volumes) >= 0) and volumes[-1] > 0
    assert "Reference point" in history["note"]
    second = get_chart(logged_in, study, "history", objective=1)["figure"]["data"][1]
    assert np.all(np.diff(array(second["y"])) >= 0)  # objective 2 is maximized


def test_chart_json_is_cached_until_the_trial_count_changes(logged_in, alice):
    study = make_study(alice)
    run_trials(study, 10)
    study.refresh_from_db()  # the counts the signature is made of are the study row's
    url = reverse("studies:chart", args=[study.pk, "history"])
    sig = charts.study_signature(study)
    first = logged_in.get(url, {"v": sig})
    assert first["Cache-Control"] == "private, max-age=86400"
    again = logged_in.get(url, {"v": sig})
    assert again.content == first.content
    assert logged_in.get(url, {"v": "old"})["Cache-Control"] == "private, no-cache"

    optuna_study_for(study).optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=1)
    study.refresh_from_db()
    new_sig = charts.study_signature(study)
    assert new_sig != sig
    after = logged_in.get(url, {"v": new_sig}).json()
    before = first.json()
    assert len(array(after["figure"]["data"][0]["x"])) == (
        len(array(before["figure"]["data"][0]["x"])) + 1
    )


def test_importances_are_computed_once_per_completed_trial_count(logged_in, alice):
    study = make_study(alice)
    optuna_study = run_trials(study, 20)
    n_complete = len(optuna_study.get_trials(states=(TrialState.COMPLETE,)))
    get_chart(logged_in, study, "importances")
    key = f"hub:importances:sampled:{study.pk}:{n_complete}:0"
    assert cache.get(key) is not None
    # A new running trial changes the page's signature but not the completed
    # count: the cached importances are used (shown here by planting a value).
    cache.set(key, ({"x": 0.25, "lr": 0.75}, n_complete, n_complete))
    optuna_study.ask()
    planted = get_chart(logged_in, study, "importances")["figure"]["data"][0]
    assert dict(zip(planted["y"], planted["x"], strict=True)) == {"x": 0.25, "lr": 0.75}


def test_importances_of_a_large_study_come_from_a_fixed_sample(logged_in, alice, monkeypatch):
    study = make_study(alice)
    optuna_study = run_trials(study, 30)
    n_complete = len(optuna_study.get_trials(states=(TrialState.COMPLETE,)))
    whole = get_chart(logged_in, study, "importances")
    assert "over a fixed sample" not in whole["note"]
    # Optuna's own PED-ANOVA on the whole study gives the same ranking.
    expected = optuna.importance.get_param_importances(
        optuna_study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
    )
    bars = whole["figure"]["data"][0]
    assert dict(zip(bars["y"], bars["x"], strict=True)) == pytest.approx(dict(expected))
    monkeypatch.setattr(limits, "MAX_IMPORTANCE_TRIALS", 10)
    cache.clear()
    sampled = get_chart(logged_in, study, "importances")
    assert f"a fixed sample of 10 of {n_complete} completed trials" in sampled["note"]
    assert set(sampled["figure"]["data"][0]["y"]) <= set(bars["y"])


def test_sampling_keeps_a_trial_in_or_out_as_the_study_grows():
    numbers = np.arange(10_000)
    before = set(charts.sample(numbers[:6_000], 1_000).tolist())
    after = set(charts.sample(numbers, 1_000).tolist())
    assert len(before) == len(after) == 1_000
    # Trials only leave the sample as others join; none comes back.
    assert {n for n in after if n < 6_000} <= before
    kept = charts.sample(numbers, 100, keep=np.array([3, 9_999]))
    assert {3, 9_999} <= set(kept.tolist()) and len(kept) == 100


def test_beyond_their_limits_charts_sample_bin_or_aggregate_and_say_so(
    logged_in, alice, monkeypatch
):
    limits = {
        "MAX_POINTS": 200,
        "MAX_LINES": 150,
        "MAX_SLICE_POINTS": 100,
        "MAX_CONTOUR_POINTS": 80,
        "EDF_POINTS": 50,
        "MAX_CURVES": 20,
        "MAX_TIMELINE_BARS": 90,
        "HYPERVOLUME_CHECKPOINTS": 30,
    }
    for name, value in limits.items():
        monkeypatch.setattr(charts.limits, name, value)
    study = make_large_study("large", 1_000, owner=alice)
    complete = study.trials.filter(state=TrialState.COMPLETE).count()

    history = get_chart(logged_in, study, "history")
    points, best = history["figure"]["data"]
    assert len(array(points["x"])) == 200
    assert f"Showing 200 of {complete:,}".replace(",", " ") in history["note"]
    # Every improvement of the best value is among the points shown.
    assert set(array(best["x"])[:-1].tolist()) <= set(array(points["x"]).tolist())

    parallel = get_chart(logged_in, study, "parallel")
    assert len(array(parallel["figure"]["data"][0]["dimensions"][0]["values"])) == 150
    assert "the best 15" in parallel["note"]

    sliced = get_chart(logged_in, study, "slice")
    assert max(len(array(t["x"])) for t in sliced["figure"]["data"]) <= 100
    assert "sample of 100" in sliced["note"]

    contour = get_chart(logged_in, study, "contour")
    assert len(array(contour["figure"]["data"][1]["x"])) == 80
    assert "Dots: a fixed sample of 80" in contour["note"]

    edf = get_chart(logged_in, study, "edf")
    assert len(array(edf["figure"]["data"][0]["x"])) == 50 and "50 quantiles" in edf["note"]

    curves = get_chart(logged_in, study, "intermediate")
    names = [t.get("name") for t in curves["figure"]["data"]]
    assert "Median" in names and "10–90 %" in names
    assert "a fixed sample of 20 of 1 000 trials" in curves["note"]

    timeline = get_chart(logged_in, study, "timeline")
    assert sum(len(array(t["y"])) for t in timeline["figure"]["data"]) == 90
    assert "The latest 90 of 1 000 trials" in timeline["note"]


def test_every_chart_of_a_10_000_trial_study_is_under_2_mb(logged_in, alice):
    for directions in (("minimize",), ("minimize", "maximize")):
        study = make_large_study(f"big-{len(directions)}", 10_000, alice, directions)
        for name, _title in charts.charts_for(study):
            response = logged_in.get(reverse("studies:chart", args=[study.pk, name]))
            assert response.status_code == 200, name
            assert len(response.content) < 2 * 1024 * 1024, name
            assert json.loads(response.content)["figure"] is not None, name


def assert_same_columns(a: Any, b: Any) -> None:
    for name in ("ids", "numbers", "states", "values", "start", "complete"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.params.keys() == b.params.keys() and a.distributions == b.distributions
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)


@pytest.mark.parametrize("directions", [("minimize",), ("minimize", "maximize")])
def test_chart_columns_refreshed_with_only_new_and_unfinished_trials_equal_a_full_read(
    alice, directions
):
    study = make_study(alice, directions)
    optuna_study = run_trials(study, 12)
    running = optuna_study.ask()
    running.suggest_float("x", -5, 5)
    if len(directions) == 1:
        running.report(3.0, 0)
    optuna_study.enqueue_trial({"x": 1.0})
    kept = charts.TrialDataCache()
    study.refresh_from_db()
    before = kept.get(study, "first")
    assert len(before.ids) == 14

    # The running trial reports again, gains a parameter the study had not seen, ends.
    if len(directions) == 1:
        running.report(2.0, 1)
    running.suggest_float("extra", 0, 1)
    optuna_study.tell(running, [1.5] * len(directions))
    run_trials(study, 5)  # the waiting trial runs first, then new ones
    study.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        refreshed = kept.get(study, "second")
    (read,) = [q["sql"] for q in queries if "studies_trial" in q["sql"]]
    assert "id >" in read  # new and unfinished trials only

    assert "extra" in refreshed.params and np.isnan(refreshed.params["extra"][:12]).all()
    assert_same_columns(refreshed, charts.TrialDataCache().get(study, "fresh"))
    assert len(refreshed.ids) == 18  # the waiting trial ran as the first of the five
