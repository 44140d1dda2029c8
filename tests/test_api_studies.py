"""The studies API: auth, create / list / detail / change / delete, validation and permissions."""

from __future__ import annotations

import io

import optuna
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from studies.models import ApiToken, Study, Trial
from studies.storage import optuna_study_for
from tests.conftest import client_for, token_for

SPACE = {
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1, "log": True},
    "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": ["dart"]}},
}


def create(api: APIClient, **data) -> dict:
    response = api.post("/api/studies/", {"name": "s", **data}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# Auth


def test_a_username_and_password_get_a_token_that_authenticates(db, alice):
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/studies/").status_code == 200


def test_a_client_with_a_session_cookie_still_gets_a_token(db, alice):
    # A script that logged in to the pages first carries a session but no CSRF token.
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        "/api/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["token"]


def test_a_wrong_password_gets_no_token(db, alice):
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert "token" not in response.json()


def test_create_token_makes_a_working_token(db, alice):
    out = io.StringIO()
    call_command("create_token", "alice", stdout=out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out.getvalue().strip()}")
    assert client.get("/api/studies/").status_code == 200


def test_a_session_login_works_too(client, alice):
    client.force_login(alice)
    assert client.get("/api/studies/").status_code == 200


def test_anonymous_requests_are_refused(db):
    client = APIClient()
    assert client.get("/api/studies/").status_code == 401
    assert client.post("/api/studies/", {"name": "x"}, format="json").status_code == 401
    assert not Study.objects.exists()


def test_a_bad_token_is_refused(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/studies/").status_code == 401


def test_a_token_stops_working_when_deleted_or_its_user_is_deactivated(db, alice, bob, staff):
    def client_with(user) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    alices = client_with(alice)
    response = alices.post("/api/studies/", {"name": "mine"}, format="json")
    assert response.status_code == 201 and response.json()["owner"] == "alice"
    study_id = response.json()["id"]
    # The token carries its user's rights: bob may not change it, staff may.
    change = {"user_attrs": {"note": "checked"}}
    assert (
        client_with(bob).patch(f"/api/studies/{study_id}/", change, format="json").status_code
        == 403
    )
    response = client_with(staff).patch(f"/api/studies/{study_id}/", change, format="json")
    assert response.status_code == 200

    alice.is_active = False
    alice.save()
    response = alices.get("/api/studies/")
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}
    ApiToken.objects.filter(user=alice).delete()
    assert alices.get("/api/studies/").json() == {"detail": "Invalid token."}


# Create


def test_creating_a_study_returns_201_with_its_id_and_owner(api, alice):
    data = create(
        api,
        name="xgb",
        directions=["maximize"],
        sampler={"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 42},
        pruner={"type": "percentile", "options": {"percentile": 25.0}},
        search_space=SPACE,
        user_attrs={"team": "ml"},
    )
    study = Study.objects.get(pk=data["id"])
    assert study.owner == alice and study.name == "xgb"
    assert study.directions == ["maximize"]
    assert study.sampler == {"type": "tpe", "options": {"n_startup_trials": 5}, "seed": 42}
    assert study.pruner == {"type": "percentile", "options": {"percentile": 25.0}}
    assert list(study.search_space) == ["booster", "lr", "rate_drop"]
    assert data["owner"] == "alice" and data["user_attrs"] == {"team": "ml"}
    assert data["n_trials"] == 0 and data["best_trial"] is None and data["best_trials"] == []
    # The row is an Optuna study.
    loaded = optuna.load_study(study_name="xgb", storage=optuna_study_for(study)._storage)
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE


def test_a_study_defaults_to_minimize_with_tpe_and_the_median_pruner(api):
    data = create(api)
    assert data["directions"] == ["minimize"]
    assert data["sampler"] == {"type": "tpe", "options": {}, "seed": None}
    assert data["pruner"] == {"type": "median", "options": {}}
    assert data["search_space"] == {} and data["objective"] is None


def test_every_sampler_and_pruner_of_the_issue_can_be_configured(api):
    for i, kind in enumerate(["tpe", "random", "cmaes", "nsga2", "nsga3", "qmc", "bruteforce"]):
        space = {"x": {"type": "int", "low": 0, "high": 3}}
        create(api, name=f"sampler-{i}", sampler={"type": kind}, search_space=space)
    create(api, name="grid", sampler={"type": "grid"}, search_space={"x": SPACE["booster"]})
    pruners = ["nop", "median", "percentile", "successive_halving", "hyperband", "threshold"]
    options = {"percentile": {"percentile": 50.0}, "threshold": {"upper": 1.0}}
    for kind in [*pruners, "patient", "wilcoxon"]:
        if kind == "patient":
            config = {"type": kind, "options": {"patience": 2, "wrapped_pruner": None}}
        else:
            config = {"type": kind, "options": options.get(kind, {})}
        create(api, name=f"pruner-{kind}", pruner=config)


def test_a_registered_objective_can_be_named(api):
    space = {"x0": {"type": "float", "low": -1, "high": 1}}
    assert create(api, objective="sphere", search_space=space)["objective"] == "sphere"


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"name": None}, "name", "required"),
        ({"name": "   "}, "name", "required"),
        ({"name": 3}, "name", "string"),
        ({"name": "x" * 513}, "name", "512"),
        ({"name": "a\x00b"}, "name", "NUL"),
        ({"directions": []}, "directions", "non-empty"),
        ({"directions": ["up"]}, "directions", "'up'"),
        ({"directions": "sideways"}, "directions", "'sideways'"),
        ({"sampler": {"type": "annealing"}}, "sampler.type", "must be one of"),
        (
            {"sampler": {"type": "tpe", "options": {"n_startup": 3}}},
            "sampler.options.n_startup",
            "",
        ),
        (
            {"sampler": {"options": {"n_startup_trials": "ten"}}},
            "sampler.options.n_startup_trials",
            "",
        ),
        ({"sampler": {"seed": -1}}, "sampler.seed", "non-negative"),
        ({"pruner": {"type": "magic"}}, "pruner.type", "must be one of"),
        ({"pruner": {"type": {}}}, "pruner.type", "must be one of"),
        ({"pruner": False}, "pruner", "must be an object"),
        ({"sampler": 0}, "sampler", "must be an object"),
        ({"sampler": {"type": ["tpe"]}}, "sampler.type", "must be one of"),
        ({"pruner": {"type": "median", "options": {"warmup": 1}}}, "pruner.options.warmup", ""),
        ({"search_space": []}, "search_space", "object"),
        ({"search_space": {"x": {"type": {}}}}, "search_space.x.type", "must be one of"),
        ({"search_space": {"x": {"type": "float", "low": 2, "high": 1}}}, "search_space.x.low", ""),
        (
            {"search_space": {"x": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "search_space.x.low",
            "log",
        ),
        (
            {"search_space": {"x": {"type": "float", "low": 1, "high": 2, "log": True, "step": 1}}},
            "search_space.x.step",
            "log",
        ),
        (
            {"search_space": {"x": {"type": "categorical", "choices": []}}},
            "search_space.x.choices",
            "",
        ),
        (
            {"search_space": {"x": {"type": "int", "low": 0, "high": 1, "when": {"y": [1]}}}},
            "search_space.x.when.y",
            "no parameter declared before",
        ),
        (
            {
                "search_space": {
                    "x": {"type": "int", "low": 0, "high": 1, "when": {"y": [1]}},
                    "y": {"type": "int", "low": 0, "high": 1},
                }
            },
            "search_space.x.when.y",
            "before",
        ),
        (
            {"search_space": {"x": {"type": "int", "low": 0, "high": 2**60}}},
            "search_space.x.high",
            "2**53",
        ),
        (
            {"search_space": {"x": {"type": "float", "low": -1e308, "high": 1e308}}},
            "search_space.x.high",
            "finite",
        ),
        ({"objective": "no-such-objective"}, "objective", "not a registered objective"),
        ({"objective": "sphere", "directions": ["minimize", "minimize"]}, "objective", "value"),
        ({"user_attrs": [1, 2]}, "user_attrs", "object"),
        ({"colour": "blue"}, "colour", "not a field"),
    ],
)
def test_an_invalid_study_is_a_400_naming_the_field_and_the_reason(api, data, field, words):
    response = api.post("/api/studies/", {"name": "s", **data}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body, body
    assert words in body[field][0]
    assert not Study.objects.exists()


def test_every_invalid_field_is_named_in_one_400(api):
    data = {
        "name": "",
        "sampler": {"type": "tpe", "options": {"n_startup": 3}},
        "pruner": {"type": "magic"},
        "search_space": {
            "a": {"type": "float", "low": 2, "high": 1},
            "b": {"type": "categorical", "choices": []},
            # A condition on a parameter that is itself wrong is not a second mistake.
            "c": {"type": "int", "low": 0, "high": 3, "when": {"b": ["x"]}},
            "d": {"type": "int", "low": 0, "high": 3, "when": {"nope": [1]}},
        },
        "objective": "no-such-objective",
        "user_attrs": [1],
    }
    response = api.post("/api/studies/", data, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {
        "name",
        "sampler.options.n_startup",
        "pruner.type",
        "search_space.a.low",
        "search_space.b.choices",
        "search_space.d.when.nope",
        "objective",
        "user_attrs",
    }
    assert not Study.objects.exists()


def test_a_check_that_needs_an_invalid_field_waits_for_it(api):
    # The objective's fit to the space is judged once the space is valid.
    data = {"objective": "sphere", "search_space": {"x": {"type": "float", "low": 1, "high": 0}}}
    response = api.post("/api/studies/", {"name": "s", **data}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"search_space.x.low"}


def test_a_taken_name_is_a_400_naming_name(api, alice):
    create(api, name="taken")
    response = api.post("/api/studies/", {"name": "taken"}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]
    assert Study.objects.count() == 1


# List and detail


def test_the_list_is_paginated_searchable_and_orderable(api, alice, bob):
    for name in ["alpha", "beta", "gamma"]:
        create(api, name=name)
    Study.objects.create(name="bobs-beta", owner=bob, directions=["minimize"])
    response = api.get("/api/studies/", {"page_size": 2})
    data = response.json()
    assert data["count"] == 4 and len(data["results"]) == 2 and data["next"]
    assert [s["name"] for s in data["results"]] == ["bobs-beta", "gamma"]  # newest first
    assert api.get(data["next"]).json()["results"][-1]["name"] == "alpha"
    found = api.get("/api/studies/", {"search": "beta"}).json()["results"]
    assert sorted(s["name"] for s in found) == ["beta", "bobs-beta"]
    ordered = api.get("/api/studies/", {"ordering": "name"}).json()["results"]
    assert [s["name"] for s in ordered] == ["alpha", "beta", "bobs-beta", "gamma"]


def test_the_detail_counts_trials_by_state_and_shows_the_best_trial(api):
    data = create(api, search_space={"x": {"type": "float", "low": -1, "high": 1}})
    study = Study.objects.get(pk=data["id"])
    optuna_study = optuna_study_for(study)
    for value in [3.0, 1.0, 2.0]:
        trial = optuna_study.ask()
        trial.suggest_float("x", -1, 1)
        optuna_study.tell(trial, value)
    optuna_study.tell(optuna_study.ask(), state=optuna.trial.TrialState.PRUNED)
    optuna_study.ask()
    detail = api.get(f"/api/studies/{study.pk}/").json()
    assert detail["trial_counts"] == {
        "RUNNING": 1,
        "WAITING": 0,
        "COMPLETE": 3,
        "PRUNED": 1,
        "FAIL": 0,
    }
    assert detail["n_trials"] == 5
    assert detail["best_trial"]["number"] == 1 and detail["best_trial"]["values"] == [1.0]
    assert [t["number"] for t in detail["best_trials"]] == [1]


def test_unknown_and_impossible_study_ids_are_404(api):
    for url in ["/api/studies/999/", "/api/studies/99999999999999999999999999/", "/api/studies/x/"]:
        response = api.get(url)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"


# Change and delete


def test_the_owner_changes_a_study(api):
    data = create(api, search_space=SPACE)
    response = api.patch(
        f"/api/studies/{data['id']}/",
        {"name": "renamed", "sampler": {"type": "random", "seed": 1}, "user_attrs": {"a": 1}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    study = Study.objects.get(pk=data["id"])
    assert study.name == "renamed" and study.sampler["type"] == "random"
    assert study.search_space == data["search_space"]  # untouched keys stay


def test_directions_cannot_change(api):
    data = create(api)
    response = api.patch(f"/api/studies/{data['id']}/", {"directions": ["maximize"]}, format="json")
    assert response.status_code == 400
    assert "cannot change" in response.json()["directions"][0]


def test_a_search_space_incompatible_with_earlier_trials_is_refused(api):
    data = create(api, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    assert api.post(f"/api/studies/{data['id']}/ask/").status_code == 201
    new_space = {"x": {"type": "categorical", "choices": ["a", "b"]}}
    response = api.patch(f"/api/studies/{data['id']}/", {"search_space": new_space}, format="json")
    assert response.status_code == 400
    assert "incompatible" in response.json()["search_space.x"][0]
    # A wider range for the same kind of parameter is fine, as in Optuna.
    wider = {"x": {"type": "float", "low": -5, "high": 5}}
    response = api.patch(f"/api/studies/{data['id']}/", {"search_space": wider}, format="json")
    assert response.status_code == 200


def test_renaming_to_a_taken_name_is_a_400(api):
    create(api, name="one")
    two = create(api, name="two")
    response = api.patch(f"/api/studies/{two['id']}/", {"name": "one"}, format="json")
    assert response.status_code == 400 and "name" in response.json()


def test_put_is_not_offered(api):
    data = create(api)
    assert api.put(f"/api/studies/{data['id']}/", {"name": "x"}, format="json").status_code == 405


def test_deleting_a_study_deletes_its_trials(api):
    data = create(api, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    for _ in range(3):
        api.post(f"/api/studies/{data['id']}/ask/")
    assert Trial.objects.count() == 3
    response = api.delete(f"/api/studies/{data['id']}/")
    assert response.status_code == 204
    assert not Study.objects.exists() and not Trial.objects.exists()
    assert api.get(f"/api/studies/{data['id']}/").status_code == 404
    assert api.delete(f"/api/studies/{data['id']}/").status_code == 404


def test_others_read_but_cannot_change_or_delete_and_staff_can(api, bob, staff):
    data = create(api)
    url = f"/api/studies/{data['id']}/"
    other = client_for(bob)
    assert other.get(url).status_code == 200
    assert other.patch(url, {"user_attrs": {"x": 1}}, format="json").status_code == 403
    assert other.delete(url).status_code == 403
    assert Study.objects.get(pk=data["id"]).user_attrs == {}
    admin = client_for(staff)
    assert admin.patch(url, {"user_attrs": {"x": 1}}, format="json").status_code == 200
    assert admin.delete(url).status_code == 204
