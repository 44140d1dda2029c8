"""The remote storage endpoint (/api/storage/v2/...): rights, errors and hostile calls.

In-process, through Django's test client: each call is what HubStorage sends,
or what a careless or hostile script could send instead. The live tests with
real client processes are in test_remote_storage_live.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from django.test import Client
from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from optuna.trial import TrialState

from studies.client_package import wheel_name
from studies.models import ApiToken, Job, JobTrial, RemoteCall, Study, Trial
from tests.conftest import token_for

FLOAT = distribution_to_json(FloatDistribution(0, 1))
ABC = distribution_to_json(CategoricalDistribution(["a", "b", "c"]))
MANY_CHOICES = json.dumps(
    {"name": "CategoricalDistribution", "attributes": {"choices": list(range(2000))}}
)


class Remote:
    """Calls as one token's holder makes them."""

    def __init__(self, user: Any) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Token {token_for(user)}"} if user else {}

    def raw(self, method: str, body: Any, **headers: str) -> Any:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.post(
            f"/api/storage/v2/{method}/",
            data=data,
            content_type="application/json",
            headers={**self.headers, **headers},
        )

    def call(self, method: str, **args: Any) -> Any:
        response = self.raw(method, args)
        assert response.status_code == 200, response.content
        return response.json()["result"]

    def error(self, method: str, status: int, **args: Any) -> dict[str, str]:
        response = self.raw(method, args)
        assert response.status_code == status, response.content
        return response.json()


@pytest.fixture
def as_alice(alice) -> Remote:
    return Remote(alice)


@pytest.fixture
def as_bob(bob) -> Remote:
    return Remote(bob)


@pytest.fixture
def study_id(as_alice) -> int:
    return as_alice.call("create_new_study", directions=["minimize"], study_name="remote")


@pytest.fixture
def trial_id(as_alice, study_id) -> int:
    return as_alice.call("create_new_trial", study_id=study_id)["id"]


def test_a_new_study_belongs_to_the_tokens_user(as_alice, study_id, alice):
    assert Study.objects.get(pk=study_id).owner == alice
    assert as_alice.call("get_study_id_from_name", study_name="remote") == study_id


def test_another_users_token_reads_but_cannot_write(as_alice, as_bob, study_id, trial_id):
    assert as_bob.call("get_study_name_from_id", study_id=study_id) == "remote"
    assert [
        t["id"] for t in as_bob.call("get_trials", study_id=study_id, after=0, ids=[])["trials"]
    ] == [trial_id]
    writes = [
        ("create_new_trial", {"study_id": study_id}),
        ("set_study_user_attr", {"study_id": study_id, "key": "k", "value": 1}),
        ("set_study_system_attr", {"study_id": study_id, "key": "k", "value": 1}),
        ("delete_study", {"study_id": study_id}),
        ("set_trial_param", {"trial_id": trial_id, "param_name": "x",
                             "param_value_internal": 0.5, "distribution": FLOAT}),
        ("set_trial_state_values", {"trial_id": trial_id, "state": "COMPLETE", "values": [1]}),
        ("set_trial_intermediate_value", {"trial_id": trial_id, "step": 0,
                                          "intermediate_value": 1.0}),
        ("set_trial_user_attr", {"trial_id": trial_id, "key": "k", "value": 1}),
        ("set_trial_system_attr", {"trial_id": trial_id, "key": "k", "value": 1}),
        ("record_heartbeat", {"trial_id": trial_id}),
    ]  # fmt: skip
    for method, args in writes:
        error = as_bob.error(method, 403, **args)
        assert error["error"] == "PermissionError"
        assert "'remote'" in error["detail"], (method, error)
    trial = Trial.objects.get(pk=trial_id)
    assert trial.state == TrialState.RUNNING and trial.params == {} and trial.heartbeat is None
    assert Study.objects.get(pk=study_id).user_attrs == {}
    assert Trial.objects.filter(study_id=study_id).count() == 1


def test_staff_may_write_to_any_study(staff, study_id, trial_id):
    Remote(staff).call("set_trial_user_attr", trial_id=trial_id, key="note", value="checked")
    assert Trial.objects.get(pk=trial_id).user_attrs == {"note": "checked"}


@pytest.mark.parametrize(
    "headers, detail",
    [
        ({}, "Send an API token"),
        ({"Authorization": "Token ohub_wrong"}, "Invalid token."),
        ({"Authorization": "Bearer x"}, "Send an API token"),
        ({"Authorization": "Token a b"}, "Send an API token"),
    ],
)
def test_a_call_without_a_valid_token_is_a_401(db, headers, detail):
    response = Client().post(
        "/api/storage/v2/get_all_studies/", data="{}", content_type="application/json",
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 401
    assert detail in response.json()["detail"]


def test_a_revoked_token_is_refused(alice):
    remote = Remote(alice)
    remote.call("get_all_studies")
    ApiToken.objects.filter(user=alice).update(revoked_at="2026-01-01T00:00:00Z")
    assert remote.error("get_all_studies", 401)["detail"] == "Token revoked."


def test_a_session_cookie_is_not_enough(alice, client):
    # No cookie-authenticated POST: another site could make a signed-in browser send it.
    client.force_login(alice)
    response = client.post(
        "/api/storage/v2/create_new_study/",
        data=json.dumps({"directions": ["minimize"], "study_name": "csrf"}),
        content_type="application/json",
    )
    assert response.status_code == 401
    assert not Study.objects.filter(name="csrf").exists()


def test_optunas_exceptions_travel_by_name(as_alice, study_id, trial_id):
    assert as_alice.error("get_study_name_from_id", 404, study_id=study_id + 1)["error"] == (
        "KeyError"
    )
    duplicate = as_alice.error(
        "create_new_study", 409, directions=["minimize"], study_name="remote"
    )
    assert duplicate["error"] == "DuplicatedStudyError"
    as_alice.call("set_trial_state_values", trial_id=trial_id, state="COMPLETE", values=[1.0])
    finished = as_alice.error("set_trial_user_attr", 409, trial_id=trial_id, key="late", value=1)
    assert finished["error"] == "UpdateFinishedTrialError"
    other = as_alice.call("create_new_trial", study_id=study_id)["id"]
    as_alice.call("set_trial_param", trial_id=other, param_name="x",
                  param_value_internal=0.5, distribution=FLOAT)  # fmt: skip
    incompatible = distribution_to_json(FloatDistribution(0.1, 1, log=True))
    args = {"param_name": "x", "param_value_internal": 0.5, "distribution": incompatible}
    next_trial = as_alice.call("create_new_trial", study_id=study_id)["id"]
    assert as_alice.error("set_trial_param", 400, trial_id=next_trial, **args)["error"] == (
        "ValueError"
    )


def test_a_retried_call_is_applied_once(as_alice, study_id):
    first = as_alice.raw("create_new_trial", {"study_id": study_id}, **{"Idempotency-Key": "k1"})
    again = as_alice.raw("create_new_trial", {"study_id": study_id}, **{"Idempotency-Key": "k1"})
    assert first.json() == again.json()
    assert Trial.objects.filter(study_id=study_id).count() == 1
    other_use = as_alice.raw("delete_study", {"study_id": study_id}, **{"Idempotency-Key": "k1"})
    assert other_use.status_code == 400 and "Idempotency-Key" in other_use.json()["detail"]
    assert RemoteCall.objects.count() == 1


def test_a_jobs_trials_are_read_only_and_never_stale_for_remote_clients(
    as_alice, alice, study_id, trial_id
):
    job = Job.objects.create(study_id=study_id, created_by=alice, n_trials=1)
    JobTrial.objects.create(job=job, trial_id=trial_id, slot=0)
    Trial.objects.filter(pk=trial_id).update(heartbeat="2020-01-01T00:00:00Z")
    error = as_alice.error("set_trial_state_values", 403, trial_id=trial_id, state="FAIL")
    assert f"job {job.pk}" in error["detail"]
    assert as_alice.call("get_stale_trial_ids", study_id=study_id, grace_period=1) == []
    own = as_alice.call("create_new_trial", study_id=study_id)["id"]
    Trial.objects.filter(pk=own).update(heartbeat="2020-01-01T00:00:00Z")
    assert as_alice.call("get_stale_trial_ids", study_id=study_id, grace_period=1) == [own]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


HOSTILE = [
    # (method, args, the field the error must name)
    ("create_new_study", {"directions": "minimize", "study_name": "x"}, "directions"),
    ("create_new_study", {"directions": ["up"], "study_name": "x"}, "directions"),
    ("create_new_study", {"directions": ["minimize"] * 100, "study_name": "x"}, "directions"),
    ("create_new_study", {"directions": ["minimize"], "study_name": "x" * 600}, "study_name"),
    ("create_new_study", {"directions": ["minimize"], "study_name": "a\x00b"}, "study_name"),
    ("create_new_study", {"directions": ["minimize"], "study_name": 5}, "study_name"),
    ("get_study_name_from_id", {"study_id": "1"}, "study_id"),
    ("get_study_name_from_id", {"study_id": 10**30}, "study_id"),
    ("get_study_name_from_id", {"study_id": -1}, "study_id"),
    ("get_study_name_from_id", {}, "study_id"),
    ("set_study_user_attr", {"study_id": "S", "key": "k", "value": deep(50)}, "value"),
    ("set_study_user_attr", {"study_id": "S", "key": "k", "value": "x" * 70000}, "value"),
    ("set_study_user_attr", {"study_id": "S", "key": "k\x00", "value": 1}, "key"),
    ("set_study_user_attr", {"study_id": "S", "key": ["k"], "value": 1}, "key"),
    ("set_trial_param", {"trial_id": "T", "param_name": "", "param_value_internal": 0.5,
                         "distribution": FLOAT}, "param_name"),
    ("set_trial_param", {"trial_id": "T", "param_name": "x", "param_value_internal": "0.5",
                         "distribution": FLOAT}, "param_value_internal"),
    ("set_trial_param", {"trial_id": "T", "param_name": "x", "param_value_internal": 0.5,
                         "distribution": "{not json"}, "distribution"),
    ("set_trial_param", {"trial_id": "T", "param_name": "x", "param_value_internal": 0.5,
                         "distribution": MANY_CHOICES},
     "distribution"),
    ("set_trial_param", {"trial_id": "T", "param_name": "x", "param_value_internal": math.nan,
                         "distribution": FLOAT}, "param_value_internal"),
    ("set_trial_param", {"trial_id": "T", "param_name": "x", "param_value_internal": math.inf,
                         "distribution": FLOAT}, "param_value_internal"),
    ("set_trial_param", {"trial_id": "T", "param_name": "k", "param_value_internal": 3,
                         "distribution": ABC}, "param_value_internal"),
    ("set_trial_param", {"trial_id": "T", "param_name": "k", "param_value_internal": 0.5,
                         "distribution": ABC}, "param_value_internal"),
    ("set_trial_state_values", {"trial_id": "T", "state": "DONE"}, "state"),
    ("set_trial_state_values", {"trial_id": "T", "state": "COMPLETE", "values": ["1"]}, "values"),
    ("set_trial_state_values", {"trial_id": "T", "state": "COMPLETE", "values": 1}, "values"),
    ("set_trial_intermediate_value", {"trial_id": "T", "step": 1.5,
                                      "intermediate_value": 1.0}, "step"),
    ("set_trial_intermediate_value", {"trial_id": "T", "step": 2**70,
                                      "intermediate_value": 1.0}, "step"),
    ("set_trial_user_attr", {"trial_id": "T", "key": "k", "value": deep(50)}, "value"),
    ("create_new_trial", {"study_id": "S", "template_trial": "x"}, "template_trial"),
    ("create_new_trial", {"study_id": "S", "template_trial": {"params": {"x": 1}}},
     "template_trial.params"),
    ("create_new_trial", {"study_id": "S", "template_trial": {
        "params": {}, "distributions": {}, "user_attrs": {}, "system_attrs": {},
        "intermediate_values": {}, "state": "NOPE", "values": None, "number": 0, "id": 0,
        "datetime_start": None, "datetime_complete": None}}, "template_trial"),
    ("create_new_trial", {"study_id": "S", "template_trial": {
        "params": {"k": 7}, "distributions": {"k": ABC}, "user_attrs": {}, "system_attrs": {},
        "intermediate_values": {}, "state": "COMPLETE", "values": [1.0], "number": 0, "id": 0,
        "datetime_start": None, "datetime_complete": None}}, "template_trial.params.k"),
    ("create_new_trial", {"study_id": "S", "template_trial": {
        "params": {"x": math.nan}, "distributions": {"x": FLOAT}, "user_attrs": {},
        "system_attrs": {}, "intermediate_values": {}, "state": "COMPLETE", "values": [1.0],
        "number": 0, "id": 0, "datetime_start": None, "datetime_complete": None}},
     "template_trial.params.x"),
    ("get_trials", {"study_id": "S", "after": 0, "ids": list(range(5000))}, "ids"),
    ("get_trials", {"study_id": "S", "after": 0, "ids": ["1"]}, "ids"),
    ("get_stale_trial_ids", {"study_id": "S", "grace_period": 0}, "grace_period"),
    ("get_stale_trial_ids", {"study_id": "S", "grace_period": 10**12}, "grace_period"),
    # Writes sent ahead of a call: only trial writes that answer nothing, each checked.
    ("get_trial", {"trial_id": "T", "_pending": {"a": 1}}, "_pending"),
    ("get_trial", {"trial_id": "T", "_pending": [["delete_study", {"study_id": "S"}]]},
     "_pending[0]"),
    ("get_trial", {"trial_id": "T", "_pending": [["set_trial_user_attr"]]}, "_pending[0]"),
    ("get_trial", {"trial_id": "T", "_pending": [["set_trial_user_attr", {}]] * 1001},
     "_pending"),
    ("set_trial_state_values", {"trial_id": "T", "state": "COMPLETE", "values": [1.0],
                                "_sync": {"study_id": "S", "after": 0, "ids": ["1"]}},
     "_sync.ids"),
    ("set_trial_state_values", {"trial_id": "T", "state": "COMPLETE", "values": [1.0],
                                "_sync": [1]}, "_sync"),
]  # fmt: skip


def resolve(value: Any, ids: dict[str, int]) -> Any:
    """The arguments with "S" and "T" as the study's and the trial's ids, at any depth."""
    if isinstance(value, dict):
        return {k: resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ids) for v in value]
    return ids.get(value, value) if isinstance(value, str) else value


@pytest.mark.parametrize("method, args, field", HOSTILE)
def test_hostile_arguments_get_a_400_naming_the_field(as_alice, trial_id, method, args, field):
    study_id = Trial.objects.get(pk=trial_id).study_id
    args = resolve(args, {"S": study_id, "T": trial_id})
    before = list(Trial.objects.values_list("id", "params", "user_attrs", "state"))
    error = as_alice.error(method, 400, **args)
    assert error["error"] == "InvalidRequest"
    assert error["detail"].startswith((f"{field}:", f"{field}.")), error
    assert list(Trial.objects.values_list("id", "params", "user_attrs", "state")) == before
    assert Study.objects.count() == 1


def test_too_many_params_or_reports_are_refused(as_alice, trial_id, settings):
    settings.HUB_MAX_PARAMS = 2
    settings.HUB_MAX_INTERMEDIATE_VALUES = 2
    for name in ("a", "b"):
        as_alice.call("set_trial_param", trial_id=trial_id, param_name=name,
                      param_value_internal=0.5, distribution=FLOAT)  # fmt: skip
    error = as_alice.error("set_trial_param", 400, trial_id=trial_id, param_name="c",
                           param_value_internal=0.5, distribution=FLOAT)  # fmt: skip
    assert "2 parameters" in error["detail"]
    for step in (0, 1):
        as_alice.call("set_trial_intermediate_value", trial_id=trial_id, step=step,
                      intermediate_value=1.0)  # fmt: skip
    error = as_alice.error("set_trial_intermediate_value", 400, trial_id=trial_id, step=2,
                           intermediate_value=1.0)  # fmt: skip
    assert "2 intermediate values" in error["detail"]


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ("[1, 2]", 400, "must be a JSON object"),
        ("{nope", 400, "not JSON"),
        ("[" * 100_000, 400, "nested too deeply"),
        (b"\xff\xfe", 400, "not JSON"),
    ],
)
def test_a_broken_body_is_a_400(as_alice, body, status, detail):
    response = as_alice.raw("get_all_studies", body)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_a_body_over_the_upload_limit_is_a_413(as_alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = as_alice.raw("get_all_studies", {"pad": "x" * 2000})
    assert response.status_code == 413


def test_unknown_methods_and_gets_answer_in_json(as_alice):
    assert as_alice.error("drop_everything", 404)["error"] == "NotFound"
    response = as_alice.client.get("/api/storage/v2/get_all_studies/", headers=as_alice.headers)
    assert response.status_code == 405 and response.json()["error"] == "MethodNotAllowed"


def test_trials_are_read_in_pages(as_alice, study_id, settings):
    settings.HUB_STORAGE_PAGE_SIZE = 2
    ids = [as_alice.call("create_new_trial", study_id=study_id)["id"] for _ in range(5)]
    first = as_alice.call("get_trials", study_id=study_id, after=0, ids=[])
    assert [t["id"] for t in first["trials"]] == ids[:2] and first["more"]
    rest = as_alice.call("get_trials", study_id=study_id, after=ids[1], ids=[ids[0]])
    assert [t["id"] for t in rest["trials"]] == [ids[0], *ids[2:4]] and rest["more"]
    last = as_alice.call("get_trials", study_id=study_id, after=ids[3], ids=[])
    assert [t["id"] for t in last["trials"]] == ids[4:] and not last["more"]


def test_old_answers_kept_for_retries_are_forgotten(as_alice, study_id, settings):
    as_alice.raw("create_new_trial", {"study_id": study_id}, **{"Idempotency-Key": "old"})
    RemoteCall.objects.update(created_at="2020-01-01T00:00:00Z")
    as_alice.raw("create_new_trial", {"study_id": study_id}, **{"Idempotency-Key": "new"})
    assert RemoteCall.forget_old() == 1
    assert list(RemoteCall.objects.values_list("key", flat=True)) == ["new"]


def test_the_tokens_page_says_how_to_install_and_use_the_client(alice, client):
    client.force_login(alice)
    page = client.post("/tokens/", {"name": "gpu box"}).content.decode()
    assert f"pip install http://testserver/client/{wheel_name()}" in page
    assert "export OPTUNA_HUB_URL=http://testserver" in page
    assert "storage=HubStorage()" in page


def sent_ahead(trial_id: int, *writes: tuple[str, dict[str, Any]]) -> list:
    return [[method, {"trial_id": trial_id, **args}] for method, args in writes]


def test_writes_sent_ahead_run_before_the_call_and_the_answer_brings_the_study(
    as_alice, study_id, trial_id
):
    pending = sent_ahead(
        trial_id,
        ("set_trial_param", {"param_name": "x", "param_value_internal": 0.25,
                             "distribution": FLOAT}),
        ("set_trial_user_attr", {"key": "note", "value": [1, 2]}),
        ("set_trial_intermediate_value", {"step": 3, "intermediate_value": 0.5}),
    )  # fmt: skip
    response = as_alice.raw("set_trial_state_values", {
        "trial_id": trial_id, "state": "COMPLETE", "values": [0.1], "_pending": pending,
        "_sync": {"study_id": study_id, "after": 0, "ids": []},
    }, **{"Idempotency-Key": "tell-1"})  # fmt: skip
    assert response.status_code == 200, response.content
    answer = response.json()
    trial = Trial.objects.get(pk=trial_id)
    assert trial.state == TrialState.COMPLETE
    assert trial.params == {"x": 0.25}
    assert trial.user_attrs == {"note": [1, 2]}
    assert trial.intermediate_values == {"3": 0.5}
    assert answer["result"]["trial"]["params"] == {"x": 0.25}
    assert [t["id"] for t in answer["trials"]["trials"]] == [trial_id]
    assert answer["trials"]["trials"][0]["state"] == "COMPLETE"
    # A retry of the same request gets the first answer; the writes are not run again.
    again = as_alice.raw("set_trial_state_values", {
        "trial_id": trial_id, "state": "COMPLETE", "values": [0.1], "_pending": pending,
    }, **{"Idempotency-Key": "tell-1"})  # fmt: skip
    assert again.status_code == 200, again.content
    assert again.json()["result"] == answer["result"]


def test_a_failed_write_sent_ahead_stops_there_and_is_named(as_alice, trial_id):
    pending = sent_ahead(
        trial_id,
        ("set_trial_user_attr", {"key": "first", "value": 1}),
        ("set_trial_param", {"param_name": "k", "param_value_internal": 9, "distribution": ABC}),
        ("set_trial_user_attr", {"key": "third", "value": 3}),
    )  # fmt: skip
    body = {"trial_id": trial_id, "state": "COMPLETE", "values": [0.1], "_pending": pending}
    response = as_alice.raw("set_trial_state_values", body)
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["pending"] == 1
    assert error["detail"] == (
        "set_trial_param (sent ahead): param_value_internal: must be the index of a choice, 0 to 2"
    )
    trial = Trial.objects.get(pk=trial_id)
    assert trial.user_attrs == {"first": 1}  # the write before it stands
    assert trial.params == {}
    assert trial.state == TrialState.RUNNING  # the call itself did not run


def test_writes_sent_ahead_need_the_same_rights(as_alice, as_bob, trial_id):
    pending = sent_ahead(trial_id, ("set_trial_user_attr", {"key": "k", "value": 1}))
    bobs = as_bob.call("create_new_study", directions=["minimize"], study_name="bobs")
    response = as_bob.raw("get_study_name_from_id", {"study_id": bobs, "_pending": pending})
    assert response.status_code == 403, response.content
    assert response.json()["pending"] == 0
    assert "'remote'" in response.json()["detail"]
    assert Trial.objects.get(pk=trial_id).user_attrs == {}


def test_clients_of_the_first_protocol_are_still_served(as_alice, study_id):
    response = as_alice.client.post(
        "/api/storage/v1/get_study_name_from_id/",
        data=json.dumps({"study_id": study_id}),
        content_type="application/json",
        headers=as_alice.headers,
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"result": "remote"}
    assert as_alice.client.post("/api/storage/v3/get_all_studies/").status_code == 404
