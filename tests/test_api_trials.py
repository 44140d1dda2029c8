"""Reading trials: the list with filters, ordering and pages, one trial, and the exports."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import timedelta

import optuna
import pytest
from optuna.trial import TrialState
from rest_framework.test import APIClient

from studies.api import exports
from studies.api.serializers import TrialSerializer
from studies.models import Study, Trial
from studies.storage import get_storage, optuna_study_for
from tests.conftest import token_for


@pytest.fixture
def api(bob) -> APIClient:
    # Reading is open to any signed-in user, not only the owner.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(bob)}")
    return client


@pytest.fixture
def study(alice) -> Study:
    """Trials 0-5: complete 3.0, complete 1.0, pruned, failed, running, complete 2.0."""
    study = Study.objects.create(name="read", owner=alice, directions=["minimize"], search_space={})
    optuna_study = optuna_study_for(study)
    for outcome in [3.0, 1.0, "pruned", "fail", "running", 2.0]:
        trial = optuna_study.ask()
        trial.suggest_float("x", 0, 10)
        trial.suggest_categorical("kind", ["a", "b"])
        trial.set_user_attr("note", f"#{trial.number}")
        if outcome == "pruned":
            trial.report(5.0, step=2)
            optuna_study.tell(trial, state=TrialState.PRUNED)
        elif outcome == "fail":
            optuna_study.tell(trial, state=TrialState.FAIL)
        elif outcome != "running":
            optuna_study.tell(trial, outcome)
    # Durations in the order 5, 4, 3, ... seconds, so ordering by them is unambiguous.
    for trial in study.trials.exclude(datetime_complete=None):
        trial.datetime_complete = trial.datetime_start + timedelta(seconds=5 - trial.number)
        trial.save(update_fields=["datetime_complete"])
    return study


def numbers(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [trial["number"] for trial in response.json()["results"]]


def test_the_trial_list_is_ordered_by_number_and_paginated(api, study):
    url = f"/api/studies/{study.pk}/trials/"
    assert numbers(api.get(url)) == [0, 1, 2, 3, 4, 5]
    page = api.get(url, {"page_size": 4}).json()
    assert page["count"] == 6 and len(page["results"]) == 4 and page["previous"] is None
    assert numbers(api.get(page["next"])) == [4, 5]


def test_trials_filter_by_state_in_any_case(api, study):
    url = f"/api/studies/{study.pk}/trials/"
    assert numbers(api.get(url, {"state": "complete"})) == [0, 1, 5]
    assert numbers(api.get(url, {"state": "PRUNED"})) == [2]
    assert numbers(api.get(url, {"state": "Fail,running"})) == [3, 4]
    response = api.get(url, {"state": "done"})
    assert response.status_code == 400 and "'done' is not a state" in response.json()["state"][0]


def test_trials_order_by_value_and_duration_with_missing_ones_last(api, study):
    url = f"/api/studies/{study.pk}/trials/"
    # The pruned trial's value is its last report (5.0); failed and running have none.
    assert numbers(api.get(url, {"ordering": "value"})) == [1, 5, 0, 2, 3, 4]
    assert numbers(api.get(url, {"ordering": "-value"})) == [2, 0, 5, 1, 3, 4]
    assert numbers(api.get(url, {"ordering": "duration"})) == [5, 3, 2, 1, 0, 4]
    assert numbers(api.get(url, {"ordering": "-duration"})) == [0, 1, 2, 3, 5, 4]
    # Unknown orderings are ignored, as DRF does.
    assert numbers(api.get(url, {"ordering": "params"})) == [0, 1, 2, 3, 4, 5]


def test_the_trial_list_of_an_unknown_study_is_404(api, db):
    assert api.get("/api/studies/4242/trials/").status_code == 404


def test_a_trial_reads_as_the_issue_spells_it(api, study):
    trial = study.trials.get(number=2)
    response = api.get(f"/api/trials/{trial.pk}/")
    assert response.status_code == 200
    data = response.json()
    assert data == {
        "trial_id": trial.pk,
        "number": 2,
        "state": "PRUNED",
        "values": [5.0],
        "params": {"x": trial.external_params()["x"], "kind": trial.external_params()["kind"]},
        "intermediate_values": {"2": 5.0},
        "datetime_start": trial.datetime_start.isoformat(),
        "datetime_complete": trial.datetime_complete.isoformat(),
        "duration": 3.0,
        "user_attrs": {"note": "#2"},
    }
    assert api.get("/api/trials/999999/").status_code == 404


def test_non_finite_numbers_read_as_strings(api, alice):
    study = Study.objects.create(name="inf", owner=alice, directions=["minimize", "maximize"])
    optuna_study = optuna_study_for(study)
    trial = optuna_study.ask()
    trial.set_user_attr("scores", [math.nan, math.inf, 1.0])
    optuna_study.tell(trial, [math.inf, -math.inf])
    data = api.get(f"/api/trials/{study.trials.get().pk}/").json()
    assert data["values"] == ["inf", "-inf"]
    assert data["user_attrs"] == {"scores": ["nan", "inf", 1.0]}
    single = Study.objects.create(name="single", owner=alice, directions=["minimize"])
    single_study = optuna_study_for(single)
    trial = single_study.ask()
    trial.report(math.nan, 0)
    single_study.tell(trial, 1.0)
    data = api.get(f"/api/trials/{single.trials.get().pk}/").json()
    assert data["intermediate_values"] == {"0": "nan"}


def test_the_json_export_holds_every_trial(api, study):
    response = api.get(f"/api/studies/{study.pk}/trials.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    trials = json.loads(b"".join(response.streaming_content))
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4, 5]
    assert trials == TrialSerializer(study.trials.order_by("number"), many=True).data


def test_the_csv_export_holds_every_trial_with_a_column_per_parameter(api, study):
    response = api.get(f"/api/studies/{study.pk}/trials.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["number"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert list(rows[0]) == [
        "number",
        "trial_id",
        "state",
        "value",
        "datetime_start",
        "datetime_complete",
        "duration",
        "params_x",
        "params_kind",
        "user_attrs_note",
    ]
    frozen = get_storage().get_trial(study.trials.get(number=1).pk)
    assert rows[1]["state"] == "COMPLETE" and float(rows[1]["value"]) == 1.0
    assert float(rows[1]["params_x"]) == frozen.params["x"]
    assert rows[1]["params_kind"] == frozen.params["kind"] and rows[1]["user_attrs_note"] == "#1"
    assert rows[3]["state"] == "FAIL" and rows[3]["value"] == ""
    assert rows[4]["datetime_complete"] == "" and rows[4]["duration"] == ""


def test_a_multi_objective_csv_has_a_column_per_objective(api, alice):
    study = Study.objects.create(name="mo", owner=alice, directions=["minimize", "maximize"])
    optuna_study = optuna_study_for(study)
    optuna_study.tell(optuna_study.ask(), [1.0, 2.0])
    response = api.get(f"/api/studies/{study.pk}/trials.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["values_0"] == "1.0" and rows[0]["values_1"] == "2.0"


def test_exports_of_an_unknown_study_are_404(api, db):
    assert api.get("/api/studies/4242/trials.csv").status_code == 404
    assert api.get("/api/studies/4242/trials.json").status_code == 404


def test_a_trial_written_by_plain_optuna_reads_the_same(api, alice):
    # The rows are Optuna's storage: a client using optuna directly and the API agree.
    study = Study.objects.create(name="plain", owner=alice, directions=["maximize"])
    storage = optuna_study_for(study)._storage
    optuna_study = optuna.load_study(study_name="plain", storage=storage)
    optuna_study.optimize(lambda t: t.suggest_int("n", 1, 3), n_trials=3)
    listed = api.get(f"/api/studies/{study.pk}/trials/").json()["results"]
    assert [t["params"] for t in listed] == [t.params for t in optuna_study.trials]
    assert [t["values"] for t in listed] == [t.values for t in optuna_study.trials]
    detail = api.get(f"/api/studies/{study.pk}/").json()
    assert detail["best_trial"]["number"] == optuna_study.best_trial.number
    assert Trial.objects.filter(study=study).count() == 3


def test_exports_in_pages_hold_every_odd_value_as_the_api_shows_it(api, alice, monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_CHUNK", 2)  # pages end inside the study
    study = Study.objects.create(name="odd", owner=alice, directions=["minimize", "maximize"])
    optuna_study = optuna_study_for(study)
    deep: object = 1.0
    for _ in range(300):  # past orjson's nesting limit for encoding
        deep = [deep]
    odd_attrs = [{"big": 2**70}, {"deep": deep}, {"text": "NaN"}, {}, {"nan": math.nan}]
    for i, attrs in enumerate(odd_attrs):
        trial = optuna_study.ask()
        trial.suggest_categorical("c", [None, True, 1.5, "s"])
        trial.suggest_float("lr", 1e-8, 1.0, log=True)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        optuna_study.tell(trial, [math.inf if i == 1 else float(i), -float(i)])
    optuna_study.ask()  # running: no values, no end
    response = api.get(f"/api/studies/{study.pk}/trials.json")
    trials = json.loads(b"".join(response.streaming_content))
    assert trials == TrialSerializer(study.trials.order_by("number"), many=True).data
    assert trials[0]["user_attrs"] == {"big": 2**70} and trials[1]["values"][0] == "inf"
    assert trials[4]["user_attrs"] == {"nan": "nan"} and len(trials) == 6
    response = api.get(f"/api/studies/{study.pk}/trials.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["number"] for row in rows] == [str(n) for n in range(6)]
    assert rows[0]["user_attrs_big"] == str(2**70) and rows[2]["user_attrs_text"] == "NaN"
    assert rows[1]["values_0"] == "inf" and rows[5]["state"] == "RUNNING"
