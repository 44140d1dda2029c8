"""Ask, enqueue, suggest, report and tell over the API, checked against Optuna itself."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState
from rest_framework.test import APIClient

from studies.config.search_space import suggest
from studies.config.seeding import TrialSeededSampler
from studies.models import Study, Trial
from tests.conftest import client_for

SPACE = {
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    "x": {"type": "float", "low": -5, "high": 5},
    "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": ["dart"]}},
    "depth": {"type": "int", "low": 1, "high": 9, "step": 2},
}


def create(api: APIClient, **data) -> int:
    response = api.post("/api/studies/", {"name": "s", **data}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def ask(api: APIClient, study_id: int, **body) -> dict:
    response = api.post(f"/api/studies/{study_id}/ask/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def post(api: APIClient, url: str, body: dict):
    return api.post(url, body, format="json")


# Ask


def test_ask_samples_the_declared_space_honouring_conditions(api):
    study_id = create(api, search_space=SPACE, sampler={"type": "random", "seed": 0})
    seen = set()
    for number in range(30):
        trial = ask(api, study_id)
        params = trial["params"]
        assert trial["number"] == number
        assert ("rate_drop" in params) == (params["booster"] == "dart")
        assert -5 <= params["x"] <= 5 and params["depth"] in (1, 3, 5, 7, 9)
        assert list(params) == [name for name in SPACE if name in params]  # declared order
        seen.add(params["booster"])
        row = Trial.objects.get(pk=trial["trial_id"])
        assert row.state == TrialState.RUNNING and row.external_params() == params
    assert seen == {"gbtree", "dart"}


def test_ask_with_a_search_space_in_the_body_samples_that_space(api):
    study_id = create(api, search_space=SPACE)
    trial = ask(api, study_id, search_space={"units": {"type": "int", "low": 8, "high": 8}})
    assert trial["params"] == {"units": 8}


def test_an_invalid_or_incompatible_body_space_is_a_400_and_starts_no_trial(api):
    study_id = create(api, search_space=SPACE)
    ask(api, study_id)
    bad = {"search_space": {"x": {"type": "float", "low": 1, "high": 0}}}
    response = post(api, f"/api/studies/{study_id}/ask/", bad)
    assert response.status_code == 400 and "search_space.x.low" in response.json()
    # x was a float in the first trial; a categorical x cannot join it.
    clash = {"search_space": {"x": {"type": "categorical", "choices": [1, 2]}}}
    response = post(api, f"/api/studies/{study_id}/ask/", clash)
    assert response.status_code == 400 and "incompatible" in response.json()["search_space.x"][0]
    assert Trial.objects.count() == 1


def test_a_seeded_study_over_http_samples_what_optuna_samples_in_one_process(api):
    sampler = {"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 7}
    study_id = create(api, search_space=SPACE, sampler=sampler)

    def objective(params: dict) -> float:
        return params["x"] ** 2 + params["depth"] + params.get("rate_drop", 0.5)

    over_http = []
    for _ in range(15):
        trial = ask(api, study_id)
        over_http.append(trial["params"])
        value = objective(trial["params"])
        response = post(api, f"/api/trials/{trial['trial_id']}/tell/", {"values": [value]})
        assert response.status_code == 200

    # Seeded studies reseed their sampler per trial (the same in every process).
    tpe = optuna.samplers.TPESampler(n_startup_trials=5, seed=7)
    local = optuna.create_study(sampler=TrialSeededSampler(tpe, 7))
    in_process = []
    for _ in range(15):
        trial = local.ask()
        params = suggest(trial, Study.objects.get(pk=study_id).search_space)
        in_process.append(params)
        local.tell(trial, objective(params))
    assert over_http == in_process


def test_changing_the_sampler_takes_effect_on_the_next_ask(api):
    study_id = create(api, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    ask(api, study_id)
    grid = {"type": "grid", "options": {"search_space": {"x": [0.25]}}}
    response = api.patch(f"/api/studies/{study_id}/", {"sampler": grid}, format="json")
    assert response.status_code == 200
    assert ask(api, study_id)["params"] == {"x": 0.25}


# Enqueue


def test_an_enqueued_trial_is_what_the_next_ask_returns(api):
    study_id = create(api, search_space=SPACE)
    fixed = {"booster": "dart", "x": 1.5, "rate_drop": 0.25, "depth": 3}
    response = post(api, f"/api/studies/{study_id}/enqueue/", {"params": fixed})
    assert response.status_code == 201
    queued = response.json()
    assert queued["state"] == "WAITING" and queued["params"] == fixed and queued["number"] == 0
    trial = ask(api, study_id)
    assert trial["trial_id"] == queued["trial_id"] and trial["params"] == fixed
    assert ask(api, study_id)["trial_id"] != queued["trial_id"]


def test_enqueue_validates_values_against_the_declared_space(api):
    study_id = create(api, search_space=SPACE)
    url = f"/api/studies/{study_id}/enqueue/"
    for params, field in [
        ({"booster": "linear"}, "params.booster"),
        ({"x": 6.0}, "params.x"),
        ({"x": "one"}, "params.x"),
        ({"depth": 2}, "params.depth"),  # off the step
        ({"depth": True}, "params.depth"),
        ({"colour": "red"}, "params.colour"),
    ]:
        response = post(api, url, {"params": params})
        assert response.status_code == 400 and field in response.json(), (params, response.json())
    assert post(api, url, {"params": "x=1"}).status_code == 400
    assert post(api, url, {"params": {"x": [1, 2]}}).status_code == 400
    assert not Trial.objects.exists()


def test_a_define_by_run_study_enqueues_any_values_and_suggest_returns_them(api):
    study_id = create(api)
    post(api, f"/api/studies/{study_id}/enqueue/", {"params": {"lr": 0.01}})
    trial = ask(api, study_id)
    assert trial["params"] == {}
    body = {"name": "lr", "distribution": {"type": "float", "low": 1e-5, "high": 1, "log": True}}
    response = post(api, f"/api/trials/{trial['trial_id']}/suggest/", body)
    assert response.json() == {"value": 0.01}


# Suggest


def test_suggest_returns_the_same_value_for_the_same_name(api):
    study_id = create(api)
    trial_id = ask(api, study_id)["trial_id"]
    url = f"/api/trials/{trial_id}/suggest/"
    body = {"name": "lr", "distribution": {"type": "float", "low": 1e-5, "high": 1, "log": True}}
    first = post(api, url, body).json()["value"]
    assert 1e-5 <= first <= 1
    assert post(api, url, body).json()["value"] == first
    choice = post(
        api, url, {"name": "opt", "distribution": {"type": "categorical", "choices": ["a", "b"]}}
    )
    assert choice.json()["value"] in ("a", "b")
    depth = post(api, url, {"name": "d", "distribution": {"type": "int", "low": 1, "high": 4}})
    assert depth.json()["value"] in (1, 2, 3, 4)
    assert Trial.objects.get(pk=trial_id).external_params() == {
        "lr": first,
        "opt": choice.json()["value"],
        "d": depth.json()["value"],
    }


def test_suggest_errors_name_the_field(api):
    study_id = create(api)
    trial_id = ask(api, study_id)["trial_id"]
    url = f"/api/trials/{trial_id}/suggest/"
    post(api, url, {"name": "lr", "distribution": {"type": "float", "low": 0, "high": 1}})
    for body, field in [
        ({"distribution": {"type": "float", "low": 0, "high": 1}}, "name"),
        ({"name": "a"}, "distribution"),
        ({"name": "a", "distribution": {"type": "float", "low": 1, "high": 0}}, "distribution.low"),
        ({"name": "a", "distribution": {"type": "beta"}}, "distribution.type"),
        (
            {"name": "a", "distribution": {"type": "int", "low": 0, "high": 1, "when": {}}},
            "distribution.when",
        ),
        # lr is a float in this trial: a categorical lr is refused, as Optuna refuses it.
        ({"name": "lr", "distribution": {"type": "categorical", "choices": [1]}}, "distribution"),
    ]:
        response = post(api, url, body)
        assert response.status_code == 400 and field in response.json(), (body, response.json())


# Report


def test_report_answers_with_the_study_pruner(api):
    pruner = {"type": "threshold", "options": {"upper": 1.0}}
    study_id = create(api, pruner=pruner)
    trial_id = ask(api, study_id)["trial_id"]
    url = f"/api/trials/{trial_id}/report/"
    assert post(api, url, {"step": 0, "value": 0.5}).json() == {"should_prune": False}
    assert post(api, url, {"step": 1, "value": 2.5}).json() == {"should_prune": True}
    assert Trial.objects.get(pk=trial_id).intermediate_values == {"0": 0.5, "1": 2.5}


def test_the_median_pruner_prunes_a_trial_worse_than_the_median(api):
    study_id = create(api, pruner={"type": "median", "options": {"n_startup_trials": 2}})
    for value in [1.0, 2.0, 3.0]:
        trial_id = ask(api, study_id)["trial_id"]
        post(api, f"/api/trials/{trial_id}/report/", {"step": 0, "value": value})
        post(api, f"/api/trials/{trial_id}/tell/", {"values": [value]})
    good, bad = ask(api, study_id)["trial_id"], ask(api, study_id)["trial_id"]
    assert not post(api, f"/api/trials/{good}/report/", {"step": 0, "value": 0.5}).json()[
        "should_prune"
    ]
    assert post(api, f"/api/trials/{bad}/report/", {"step": 0, "value": 9.0}).json()["should_prune"]


def test_reporting_a_step_again_keeps_the_first_value_as_optuna_does(api):
    trial_id = ask(api, create(api))["trial_id"]
    url = f"/api/trials/{trial_id}/report/"
    post(api, url, {"step": 3, "value": 1.0})
    assert post(api, url, {"step": 3, "value": 2.0}).status_code == 200
    assert Trial.objects.get(pk=trial_id).intermediate_values == {"3": 1.0}


def test_report_rejects_bad_input_and_multi_objective_studies(api):
    trial_id = ask(api, create(api))["trial_id"]
    url = f"/api/trials/{trial_id}/report/"
    for body, field in [
        ({"value": 1.0}, "step"),
        ({"step": -1, "value": 1.0}, "step"),
        ({"step": 1.5, "value": 1.0}, "step"),
        ({"step": 2**64, "value": 1.0}, "step"),
        ({"step": 0}, "value"),
        ({"step": 0, "value": "high"}, "value"),
        ({"step": 0, "value": True}, "value"),
        ({"step": 0, "value": 10**400}, "value"),
    ]:
        response = post(api, url, body)
        assert response.status_code == 400 and field in response.json(), (body, response.json())
    multi = create(api, name="multi", directions=["minimize", "maximize"])
    response = post(
        api, f"/api/trials/{ask(api, multi)['trial_id']}/report/", {"step": 0, "value": 1}
    )
    assert response.status_code == 400 and "multi-objective" in str(response.json())


# Tell


def test_tell_completes_the_trial_and_returns_it(api):
    trial = ask(api, create(api, search_space=SPACE))
    response = post(api, f"/api/trials/{trial['trial_id']}/tell/", {"values": [0.25]})
    assert response.status_code == 200
    data = response.json()
    assert data["state"] == "COMPLETE" and data["values"] == [0.25]
    assert data["params"] == trial["params"] and data["duration"] >= 0
    assert set(data) == {
        "trial_id",
        "number",
        "state",
        "values",
        "params",
        "intermediate_values",
        "datetime_start",
        "datetime_complete",
        "duration",
        "user_attrs",
    }


def test_the_number_of_values_must_match_the_directions(api):
    study_id = create(api, directions=["minimize", "maximize"])
    trial_id = ask(api, study_id)["trial_id"]
    url = f"/api/trials/{trial_id}/tell/"
    for values in [[1.0], [1.0, 2.0, 3.0]]:
        response = post(api, url, {"values": values})
        assert response.status_code == 400 and "expected 2" in response.json()["values"][0]
    assert Trial.objects.get(pk=trial_id).state == TrialState.RUNNING
    assert post(api, url, {"values": [1.0, 2.0]}).json()["values"] == [1.0, 2.0]


@pytest.mark.parametrize("nan", ["nan", "NaN", None])
def test_nan_fails_the_trial_as_optuna_does(api, nan):
    trial_id = ask(api, create(api))["trial_id"]
    response = post(api, f"/api/trials/{trial_id}/tell/", {"values": [nan]})
    assert response.status_code == 200
    assert response.json()["state"] == "FAIL" and response.json()["values"] is None
    # Retrying the same request is safe.
    assert post(api, f"/api/trials/{trial_id}/tell/", {"values": [nan]}).status_code == 200


def test_a_nan_literal_in_the_body_fails_the_trial_too(api):
    trial_id = ask(api, create(api))["trial_id"]
    response = api.post(
        f"/api/trials/{trial_id}/tell/", '{"values": [NaN]}', content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["state"] == "FAIL"


def test_infinite_values_complete_the_trial_and_read_back_as_strings(api):
    study_id = create(api, directions=["minimize", "maximize"])
    trial_id = ask(api, study_id)["trial_id"]
    response = post(api, f"/api/trials/{trial_id}/tell/", {"values": ["inf", "-inf"]})
    assert response.json()["state"] == "COMPLETE" and response.json()["values"] == ["inf", "-inf"]
    assert Trial.objects.get(pk=trial_id).values == [math.inf, -math.inf]


def test_pruned_and_failed_trials(api):
    study_id = create(api)
    pruned = ask(api, study_id)["trial_id"]
    post(api, f"/api/trials/{pruned}/report/", {"step": 4, "value": 0.75})
    response = post(api, f"/api/trials/{pruned}/tell/", {"state": "PRUNED"})
    # Optuna keeps the last reported value as a pruned trial's value.
    assert response.json()["state"] == "PRUNED" and response.json()["values"] == [0.75]
    failed = ask(api, study_id)["trial_id"]
    response = post(api, f"/api/trials/{failed}/tell/", {"state": "fail"})
    assert response.json()["state"] == "FAIL" and response.json()["values"] is None


def test_tell_rejects_inconsistent_bodies(api):
    trial_id = ask(api, create(api))["trial_id"]
    url = f"/api/trials/{trial_id}/tell/"
    for body, field in [
        ({}, "values"),
        ({"state": "complete"}, "values"),
        ({"state": "pruned", "values": [1.0]}, "values"),
        ({"state": "running"}, "state"),
        ({"state": "waiting"}, "state"),
        ({"values": []}, "values"),
        ({"values": 1.0}, "values"),
        ({"values": ["one"]}, "values"),
        ({"values": [{"a": 1}]}, "values"),
    ]:
        response = post(api, url, body)
        assert response.status_code == 400 and field in response.json(), (body, response.json())
    assert Trial.objects.get(pk=trial_id).state == TrialState.RUNNING


def test_telling_a_finished_trial_again_is_200_when_identical_and_409_otherwise(api):
    study_id = create(api)
    trial_id = ask(api, study_id)["trial_id"]
    url = f"/api/trials/{trial_id}/tell/"
    first = post(api, url, {"values": [1.5]})
    again = post(api, url, {"values": [1.5]})
    assert again.status_code == 200 and again.json() == first.json()
    for body in [{"values": [2.0]}, {"state": "pruned"}, {"state": "fail"}, {"values": ["nan"]}]:
        response = post(api, url, body)
        assert response.status_code == 409, body
        assert "already COMPLETE" in response.json()["detail"]
    assert Trial.objects.get(pk=trial_id).values == [1.5]
    pruned = ask(api, study_id)["trial_id"]
    post(api, f"/api/trials/{pruned}/tell/", {"state": "pruned"})
    assert post(api, f"/api/trials/{pruned}/tell/", {"state": "Pruned"}).status_code == 200
    assert post(api, f"/api/trials/{pruned}/tell/", {"values": [1.0]}).status_code == 409


def test_a_waiting_trial_cannot_be_told_suggested_or_reported(api):
    study_id = create(api)
    response = post(api, f"/api/studies/{study_id}/enqueue/", {"params": {}})
    trial_id = response.json()["trial_id"]
    suggestion = {"name": "x", "distribution": {"type": "int", "low": 0, "high": 1}}
    for action, body in [
        ("tell", {"values": [1.0]}),
        ("suggest", suggestion),
        ("report", {"step": 0, "value": 1.0}),
    ]:
        response = post(api, f"/api/trials/{trial_id}/{action}/", body)
        assert response.status_code == 409 and "WAITING" in response.json()["detail"]


def test_a_finished_trial_takes_no_more_suggestions_or_reports(api):
    trial_id = ask(api, create(api))["trial_id"]
    post(api, f"/api/trials/{trial_id}/tell/", {"values": [1.0]})
    body = {"name": "x", "distribution": {"type": "int", "low": 0, "high": 1}}
    assert post(api, f"/api/trials/{trial_id}/suggest/", body).status_code == 409
    assert post(api, f"/api/trials/{trial_id}/report/", {"step": 0, "value": 1}).status_code == 409


def test_telling_the_last_point_of_a_grid_is_fine(api):
    space = {"x": {"type": "categorical", "choices": ["a", "b"]}}
    study_id = create(api, sampler={"type": "grid"}, search_space=space)
    seen = set()
    for _ in range(2):
        trial = ask(api, study_id)
        seen.add(trial["params"]["x"])
        response = post(api, f"/api/trials/{trial['trial_id']}/tell/", {"values": [1.0]})
        assert response.status_code == 200
    assert seen == {"a", "b"}


# Permissions and unknown ids


def test_only_the_owner_or_staff_drive_a_study(api, bob, staff):
    study_id = create(api)
    trial_id = ask(api, study_id)["trial_id"]
    other = client_for(bob)
    suggest_body = {"name": "x", "distribution": {"type": "int", "low": 0, "high": 1}}
    for url, body in [
        (f"/api/studies/{study_id}/ask/", {}),
        (f"/api/studies/{study_id}/enqueue/", {"params": {}}),
        (f"/api/trials/{trial_id}/suggest/", suggest_body),
        (f"/api/trials/{trial_id}/report/", {"step": 0, "value": 1.0}),
        (f"/api/trials/{trial_id}/tell/", {"values": [1.0]}),
    ]:
        assert post(other, url, body).status_code == 403, url
    assert Trial.objects.count() == 1
    assert Trial.objects.get(pk=trial_id).state == TrialState.RUNNING
    assert other.get(f"/api/trials/{trial_id}/").status_code == 200
    admin = client_for(staff)
    assert post(admin, f"/api/trials/{trial_id}/tell/", {"values": [1.0]}).status_code == 200
    assert post(admin, f"/api/studies/{study_id}/ask/", {}).status_code == 201


def test_unknown_ids_are_404(api):
    for url in [
        "/api/studies/12345/ask/",
        "/api/studies/12345/enqueue/",
        "/api/trials/12345/suggest/",
        "/api/trials/12345/report/",
        "/api/trials/12345/tell/",
        "/api/trials/123456789012345678901234567890/tell/",
    ]:
        assert post(api, url, {}).status_code == 404, url


def test_malformed_json_is_a_400(api):
    trial_id = ask(api, create(api))["trial_id"]
    for body in ["{", "[1, 2", '{"values": [1.0]} trailing', "\xff", "[" * 50000 + "]" * 50000]:
        response = api.post(f"/api/trials/{trial_id}/tell/", body, content_type="application/json")
        assert response.status_code == 400, body[:10]
        assert "JSON parse error" in response.json()["detail"]
    response = api.post(f"/api/trials/{trial_id}/tell/", "values=1", content_type="text/plain")
    assert response.status_code == 415
    assert Trial.objects.get(pk=trial_id).state == TrialState.RUNNING


def test_a_study_or_trial_deleted_while_a_request_runs_is_a_404(api):
    from rest_framework.exceptions import NotFound

    from studies.api import ask_tell

    study_id = create(api)
    trial = Trial.objects.select_related("study").get(pk=ask(api, study_id)["trial_id"])
    study = Study.objects.get(pk=study_id)
    # The views loaded these rows; then someone deleted the study.
    Study.objects.filter(pk=study_id).delete()
    with pytest.raises(NotFound):
        ask_tell.ask(study)
    with pytest.raises(NotFound):
        ask_tell.enqueue(study, {}, {})
    with pytest.raises(NotFound):
        ask_tell.tell(trial, [1.0], None)
    with pytest.raises(NotFound):
        ask_tell.report(trial, 0, 1.0)
    with pytest.raises(NotFound):
        ask_tell.suggest_param(trial, "x", {"type": "int", "low": 0, "high": 1})


def test_a_malformed_body_space_names_the_parameter(api):
    study_id = create(api)
    for space, field in [
        ({"x": 5}, "search_space.x"),
        ([1, 2], "search_space"),
        ({"x": {"type": "float", "low": 0}}, "search_space.x.high"),
    ]:
        response = post(api, f"/api/studies/{study_id}/ask/", {"search_space": space})
        assert response.status_code == 400 and field in response.json(), response.json()


@pytest.mark.parametrize(
    "sampler, directions",
    [
        ("tpe", ["minimize"]),
        ("random", ["minimize"]),
        ("grid", ["minimize"]),
        ("cmaes", ["minimize"]),
        ("gp", ["minimize"]),
        ("nsga2", ["minimize", "maximize"]),
        ("nsga3", ["minimize", "maximize"]),
        ("qmc", ["minimize"]),
        ("bruteforce", ["minimize"]),
    ],
)
def test_every_sampler_runs_a_study_over_the_api(api, sampler, directions):
    space = {
        "x": {"type": "float", "low": -2, "high": 2, "step": 0.5},
        "k": {"type": "categorical", "choices": ["a", "b"]},
    }
    study_id = create(
        api, search_space=space, directions=directions, sampler={"type": sampler, "seed": 1}
    )
    seen = []
    for _ in range(4):
        trial = ask(api, study_id)
        seen.append(trial["params"])
        x = trial["params"]["x"]
        values = [x**2, abs(x)][: len(directions)]
        response = post(api, f"/api/trials/{trial['trial_id']}/tell/", {"values": values})
        assert response.status_code == 200, response.json()
    assert all(-2 <= p["x"] <= 2 and p["k"] in ("a", "b") for p in seen)
    assert Trial.objects.filter(study_id=study_id, state=TrialState.COMPLETE).count() == 4
