"""Stored input that breaks pages for everyone (issue #9).

Each hostile input an ordinary user can send is refused with a 400 naming the
field, nothing of it is stored, and afterwards every study list, study, trial
list and export still answers 200 with complete JSON, on a real server too.
Rows stored before these checks (or written by an objective) are still served.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any

import pytest
import requests
from django.db import connection

from studies.models import Study, Trial, json_safe
from studies.storage import optuna_study_for
from tests.conftest import token_for

NAN, INF = math.nan, math.inf
SPACE = {
    "x": {"type": "float", "low": 0, "high": 1},
    "kind": {"type": "categorical", "choices": ["a", "b"]},
}


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of objects: nested(1) == {"a": 1}."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def body(data: Any) -> str:
    # Python's json.dumps writes NaN and Infinity, as a careless client does; the
    # API's parser accepts them (tell values may be non-finite).
    return json.dumps(data)


# (target, body, the field the 400 names, words of its message)
NON_FINITE = [
    ("create", {"sampler": {"options": {"prior_weight": NAN}}}, "sampler.options.prior_weight"),
    ("create", {"sampler": {"options": {"prior_weight": INF}}}, "sampler.options.prior_weight"),
    (
        "create",
        {"pruner": {"type": "threshold", "options": {"lower": NAN}}},
        "pruner.options.lower",
    ),
    (
        "create",
        {"pruner": {"type": "threshold", "options": {"upper": -INF}}},
        "pruner.options.upper",
    ),
    (
        "create",
        {
            "pruner": {
                "type": "patient",
                "options": {
                    "patience": 1,
                    "wrapped_pruner": {"type": "threshold", "options": {"lower": NAN}},
                },
            }
        },
        "pruner.options.wrapped_pruner",
    ),
    (
        "create",
        {"sampler": {"type": "grid", "options": {"search_space": {"x": [0, NAN]}}}},
        "sampler.options.search_space",
    ),
    (
        "create",
        {"search_space": {"x": {"type": "float", "low": -INF, "high": 1}}},
        "search_space.x.low",
    ),
    ("patch", {"sampler": {"options": {"prior_weight": NAN}}}, "sampler.options.prior_weight"),
    (
        "ask",
        {"search_space": {"y": {"type": "float", "low": 0, "high": INF}}},
        "search_space.y.high",
    ),
    ("enqueue", {"params": {"x": NAN}}, "params.x"),
]
NON_FINITE_CASES = [(target, data, field, "finite") for target, data, field in NON_FINITE]

DEEP_CASES = [
    ("create", {"user_attrs": nested(600)}, "user_attrs.a.a", "levels deep"),
    ("create", {"user_attrs": nested(21)}, "user_attrs.a.a", "more than 20 levels"),
    ("patch", {"user_attrs": nested(600)}, "user_attrs.a.a", "levels deep"),
    ("create", {"sampler": {"options": {"x": nested(30)}}}, "sampler.options.x", "levels deep"),
    ("create", {"search_space": {"x": nested(25)}}, "search_space.x.a", "levels deep"),
    ("enqueue", {"params": {"x": 0.5}, "user_attrs": nested(600)}, "user_attrs.a.a", "levels"),
    ("enqueue", {"params": {"x": [[0.5]]}}, "params.x", "must be a number"),
    ("ask", {"search_space": {"y": nested(25)}}, "search_space.y.a", "levels deep"),
    ("suggest", {"name": "y", "distribution": nested(25)}, "distribution.a.a", "levels deep"),
    ("tell", {"values": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]}, "values", "levels deep"),
]

NUL_CASES = [
    ("create", {"user_attrs": {"note": "a\x00b"}}, "user_attrs.note", "NUL"),
    ("create", {"user_attrs": {"a\x00b": 1}}, "user_attrs", "NUL"),
    ("create", {"search_space": {"x\x00": SPACE["x"]}}, "search_space", "NUL"),
    (
        "create",
        {"search_space": {"k": {"type": "categorical", "choices": ["a", "b\x00"]}}},
        "search_space.k.choices",
        "NUL",
    ),
    ("create", {"sampler": {"options": {"x": "\x00"}}}, "sampler.options.x", "NUL"),
    ("patch", {"user_attrs": {"deep": {"er": ["\x00"]}}}, "user_attrs.deep.er", "NUL"),
    (
        "ask",
        {"search_space": {"k": {"type": "categorical", "choices": ["\x00"]}}},
        "search_space.k.choices",
        "NUL",
    ),
    ("enqueue", {"params": {"kind": "a\x00"}}, "params.kind", "NUL"),
    ("enqueue", {"params": {"x\x00": 1}}, "params", "NUL"),
    ("enqueue", {"params": {"x": 0.5}, "user_attrs": {"n": "\x00"}}, "user_attrs.n", "NUL"),
    (
        "suggest",
        {"name": "c", "distribution": {"type": "categorical", "choices": ["\x00"]}},
        "distribution.choices",
        "NUL",
    ),
]

ALL_CASES = NON_FINITE_CASES + DEEP_CASES + NUL_CASES


def targets(study_id: int, trial_id: int) -> dict[str, tuple[str, str]]:
    return {
        "create": ("post", "/api/studies/"),
        "patch": ("patch", f"/api/studies/{study_id}/"),
        "ask": ("post", f"/api/studies/{study_id}/ask/"),
        "enqueue": ("post", f"/api/studies/{study_id}/enqueue/"),
        "suggest": ("post", f"/api/trials/{trial_id}/suggest/"),
        "tell": ("post", f"/api/trials/{trial_id}/tell/"),
    }


def with_name(target: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hostile", **data} if target == "create" else data


@pytest.fixture
def world(api) -> dict[str, Any]:
    """Alice's study with a declared space and one running trial, made over the API."""
    response = api.post("/api/studies/", {"name": "mine", "search_space": SPACE}, format="json")
    assert response.status_code == 201, response.json()
    study_id = response.json()["id"]
    trial_id = api.post(f"/api/studies/{study_id}/ask/").json()["trial_id"]
    return {"study_id": study_id, "trial_id": trial_id, "urls": targets(study_id, trial_id)}


def snapshot() -> list[Any]:
    """Every stored study and trial: what a refused request must leave as it was."""
    studies = list(Study.objects.order_by("pk").values())
    trials = list(Trial.objects.order_by("pk").values())
    return [{k: v for k, v in row.items() if k != "heartbeat"} for row in studies + trials]


@pytest.mark.parametrize(("target", "data", "field", "words"), NON_FINITE_CASES + DEEP_CASES)
def test_it_refuses_non_finite_and_deep_input_with_a_400_naming_the_field_storing_nothing(
    api, world, target, data, field, words
):
    before = snapshot()
    method, url = world["urls"][target]
    response = getattr(api, method)(
        url, body(with_name(target, data)), content_type="application/json"
    )
    assert response.status_code == 400, response.content[:300]
    errors = response.json()
    assert field in errors, errors
    assert words in " ".join(errors[field]), errors
    assert snapshot() == before


@pytest.mark.parametrize(("target", "data", "field", "words"), NUL_CASES)
def test_it_refuses_nul_characters_anywhere_they_would_be_stored(
    api, world, target, data, field, words
):
    # Also run on PostgreSQL (below), whose text columns cannot hold a NUL.
    before = snapshot()
    method, url = world["urls"][target]
    response = getattr(api, method)(
        url, body(with_name(target, data)), content_type="application/json"
    )
    assert response.status_code == 400 and "NUL" in " ".join(response.json()[field])
    assert snapshot() == before


def test_json_nested_exactly_to_the_limit_and_non_finite_user_attrs_are_accepted(api):
    data = {"name": "deep-enough", "user_attrs": {"a": nested(19), "loss": -INF}}
    response = api.post("/api/studies/", body(data), content_type="application/json")
    assert response.status_code == 201, response.json()
    assert response.json()["user_attrs"]["loss"] == "-inf"


def test_it_refuses_user_attrs_larger_than_hub_max_user_attrs_bytes(api, world, settings):
    settings.HUB_MAX_USER_ATTRS_BYTES = 1000
    big = {"blob": "x" * 1000}
    response = api.patch(f"/api/studies/{world['study_id']}/", {"user_attrs": big}, format="json")
    assert response.status_code == 400 and "at most 1000" in response.json()["user_attrs"][0]
    url = f"/api/studies/{world['study_id']}/enqueue/"
    response = api.post(url, {"params": {}, "user_attrs": big}, format="json")
    assert response.status_code == 400 and "bytes" in response.json()["user_attrs"][0]
    small = {"blob": "x" * 900}
    assert api.post(url, {"params": {}, "user_attrs": small}, format="json").status_code == 201


def floats(n: int) -> dict[str, Any]:
    return {f"p{i}": {"type": "float", "low": 0, "high": 1} for i in range(n)}


def test_it_refuses_more_parameters_than_hub_max_params_within_a_second(api, world):
    ask = f"/api/studies/{world['study_id']}/ask/"
    for method, url, data, field in [
        ("post", "/api/studies/", {"name": "wide", "search_space": floats(101)}, "search_space"),
        ("post", ask, {"search_space": floats(2000)}, "search_space"),
        (
            "post",
            f"/api/studies/{world['study_id']}/enqueue/",
            {"params": {f"p{i}": 0.5 for i in range(101)}},
            "params",
        ),
    ]:
        start = time.monotonic()
        response = getattr(api, method)(url, data, format="json")
        assert time.monotonic() - start < 1.0
        assert response.status_code == 400 and "at most 100" in response.json()[field][0]
    response = api.post(ask, {"search_space": floats(100)}, format="json")
    assert response.status_code == 201 and len(response.json()["params"]) == 100


def test_a_define_by_run_trial_gets_at_most_hub_max_params_parameters(api, alice, settings):
    settings.HUB_MAX_PARAMS = 3
    study_id = api.post("/api/studies/", {"name": "dbr"}, format="json").json()["id"]
    trial_id = api.post(f"/api/studies/{study_id}/ask/").json()["trial_id"]
    url = f"/api/trials/{trial_id}/suggest/"
    distribution = {"type": "int", "low": 0, "high": 9}
    for name in ["a", "b", "c"]:
        response = api.post(url, {"name": name, "distribution": distribution}, format="json")
        assert response.status_code == 200
    response = api.post(url, {"name": "d", "distribution": distribution}, format="json")
    assert response.status_code == 400 and "3 parameters" in response.json()["name"][0]
    # A parameter the trial has answers again.
    response = api.post(url, {"name": "a", "distribution": distribution}, format="json")
    assert response.status_code == 200


def test_it_refuses_more_choices_than_hub_max_choices_and_checks_the_allowed_quickly(api):
    many = {"type": "categorical", "choices": [f"c{i}" for i in range(1001)]}
    response = api.post("/api/studies/", {"name": "c", "search_space": {"k": many}}, format="json")
    assert (
        response.status_code == 400
        and "at most 1000" in response.json()["search_space.k.choices"][0]
    )
    # 1000 choices and a condition listing all of them, on 50 parameters: linear checks.
    choices = [f"c{i}" for i in range(1000)]
    space = {"k": {"type": "categorical", "choices": choices}}
    space |= {
        f"p{i}": {"type": "float", "low": 0, "high": 1, "when": {"k": choices}} for i in range(50)
    }
    start = time.monotonic()
    response = api.post("/api/studies/", {"name": "c", "search_space": space}, format="json")
    assert response.status_code == 201 and time.monotonic() - start < 1.0


DEEP_TEXT = {"sampler_options": '{"a":' * 100_000 + "1" + "}" * 100_000}
DEEP_TEXT["pruner_options"] = DEEP_TEXT["sampler_options"]
DEEP_TEXT["params-0-choices"] = "[" * 100_000 + "]" * 100_000


def new_study_post(**overrides: str) -> dict[str, str]:
    data = {
        "name": "form-study",
        "directions": "minimize",
        "sampler": "tpe",
        "pruner": "median",
        "params-TOTAL_FORMS": "1",
        "params-INITIAL_FORMS": "0",
        "params-0-name": "kind",
        "params-0-type": "categorical",
        "params-0-choices": "a, b",
    }
    return {**data, **overrides}


@pytest.mark.parametrize("field", list(DEEP_TEXT))
def test_the_new_study_form_refuses_json_nested_100000_deep_beside_the_field(client, alice, field):
    client.force_login(alice)
    response = client.post("/studies/new/", new_study_post(**{field: DEEP_TEXT[field]}))
    assert response.status_code == 400
    if field.startswith("params-"):
        errors = response.context["params"].forms[0].errors["choices"]
    else:
        errors = response.context["form"].errors[field]
    assert "nested too deeply" in " ".join(errors)
    assert not Study.objects.exists()


def test_the_new_study_form_refuses_options_nested_beyond_the_limit(client, alice):
    client.force_login(alice)
    options = json.dumps({"prior_weight": nested(30)})
    response = client.post("/studies/new/", new_study_post(sampler_options=options))
    assert response.status_code == 400
    assert "levels deep" in " ".join(response.context["form"].errors["sampler_options"])
    response = client.post(
        "/studies/new/", new_study_post(pruner_options='{"n_warmup_steps": NaN}')
    )
    assert "finite" in " ".join(response.context["form"].errors["pruner_options"])
    assert not Study.objects.exists()


def test_json_safe_converts_a_value_nested_100000_deep_and_keeps_key_order():
    deep: Any = [INF]
    for _ in range(100_000):
        deep = {"z": deep, "a": (NAN, 1)}
    safe = json_safe(deep)
    assert list(safe) == ["z", "a"] and safe["a"] == ["nan", 1]
    for _ in range(100_000):
        safe = safe["z"]
    assert safe == ["inf"]


def test_the_csv_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(api):
    hostile = ['=HYPERLINK("http://evil","x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"]
    space = {"kind": {"type": "categorical", "choices": [*hostile, "plain"]}}
    study_id = api.post(
        "/api/studies/", {"name": "csv", "search_space": space}, format="json"
    ).json()["id"]
    for choice in [*hostile, "plain"]:
        attrs = {"note": choice, "loss": -1.5}
        api.post(
            f"/api/studies/{study_id}/enqueue/",
            {"params": {"kind": choice}, "user_attrs": attrs},
            format="json",
        )
        trial = api.post(f"/api/studies/{study_id}/ask/").json()
        api.post(f"/api/trials/{trial['trial_id']}/tell/", {"values": [-2.0]}, format="json")
    response = api.get(f"/api/studies/{study_id}/trials.csv")
    rows = list(
        csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode(), newline=""))
    )
    assert [row["params_kind"] for row in rows] == [*("'" + h for h in hostile), "plain"]
    assert [row["user_attrs_note"] for row in rows] == [*("'" + h for h in hostile), "plain"]
    # Numbers are numbers, not text to neutralise.
    assert {row["user_attrs_loss"] for row in rows} == {"-1.5"}
    assert {row["value"] for row in rows} == {"-2.0"}


# Against a real server: what every user sees afterwards.


def session_for(user: Any) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token_for(user)}"
    return session


def everything_answers(base: str, users: list[Any], study_id: int, n_trials: int) -> None:
    """The list, the study, its trials and both exports: 200 and complete, for every user."""
    for user in users:
        session = session_for(user)
        listed = session.get(f"{base}/api/studies/", timeout=30)
        assert listed.status_code == 200, listed.text[:300]
        assert study_id in [s["id"] for s in listed.json()["results"]]
        for url in [f"/api/studies/{study_id}/", f"/api/studies/{study_id}/trials/"]:
            response = session.get(base + url, timeout=30)
            assert response.status_code == 200, (url, response.text[:300])
            response.json()
        exported = session.get(f"{base}/api/studies/{study_id}/trials.json", timeout=30)
        assert exported.status_code == 200 and len(exported.json()) == n_trials
        exported = session.get(f"{base}/api/studies/{study_id}/trials.csv", timeout=30)
        assert exported.status_code == 200
        assert len(list(csv.DictReader(io.StringIO(exported.text, newline="")))) == n_trials


@pytest.mark.slow
def test_after_every_refused_input_every_list_study_and_export_still_answers(
    hub_server, alice, bob
):
    session = session_for(alice)
    response = session.post(
        f"{hub_server}/api/studies/", json={"name": "mine", "search_space": SPACE}, timeout=30
    )
    study_id = response.json()["id"]
    trial_id = session.post(f"{hub_server}/api/studies/{study_id}/ask/", timeout=30).json()[
        "trial_id"
    ]
    urls = targets(study_id, trial_id)
    json_headers = {"Content-Type": "application/json"}
    for target, data, field, words in ALL_CASES:
        method, url = urls[target]
        start = time.monotonic()
        response = session.request(
            method,
            hub_server + url,
            data=body(with_name(target, data)),
            headers=json_headers,
            timeout=30,
        )
        assert time.monotonic() - start < 1.0, (target, field)
        assert response.status_code == 400, (target, field, response.text[:300])
        assert words in " ".join(response.json()[field]), response.json()
    start = time.monotonic()
    response = session.post(
        f"{hub_server}/api/studies/{study_id}/ask/", json={"search_space": floats(2000)}, timeout=30
    )
    assert response.status_code == 400 and time.monotonic() - start < 1.0
    assert Study.objects.count() == 1 and Trial.objects.count() == 1
    everything_answers(hub_server, [alice, bob], study_id, n_trials=1)


@pytest.mark.slow
def test_rows_stored_before_these_checks_are_still_served_whole(hub_server, alice, bob):
    # As an earlier version of the hub stored them (or an objective's set_user_attr).
    old = Study.objects.create(
        name="old",
        owner=alice,
        directions=["minimize"],
        sampler={"type": "tpe", "options": {"prior_weight": NAN}, "seed": None},
        pruner={"type": "threshold", "options": {"lower": -INF}},
        user_attrs={"deep": nested(600)},
    )
    optuna_study = optuna_study_for(
        Study.objects.create(name="plain", owner=alice, directions=["minimize"])
    )
    optuna_study.tell(optuna_study.ask(), 1.0)
    optuna_study.enqueue_trial({})
    # Written as a row, not through Optuna: its tell would deepcopy the trial, recursively.
    Trial.objects.update(user_attrs={"deep": nested(600, leaf=NAN)})
    everything_answers(hub_server, [alice, bob], old.pk, n_trials=0)
    everything_answers(hub_server, [bob], optuna_study._study_id, n_trials=2)


def break_user_attrs(trial_pk: int) -> None:
    """Store text the database gives back but Python's JSON cannot read (an unreadable row)."""
    text = '{"a":' * 100_000 + "1" + "}" * 100_000
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Trial._meta.db_table} SET user_attrs = %s WHERE id = %s", [text, trial_pk]
        )


@pytest.mark.slow
def test_an_export_meeting_an_unreadable_row_breaks_off_visibly_never_a_short_200(
    hub_server, alice
):
    study = Study.objects.create(name="broken", owner=alice, directions=["minimize"])
    optuna_study = optuna_study_for(study)
    for value in [1.0, 2.0, 3.0]:
        optuna_study.tell(optuna_study.ask(), value)
    break_user_attrs(study.trials.get(number=1).pk)
    session = session_for(alice)
    url = f"{hub_server}/api/studies/{study.pk}/trials"
    # Mid-stream: the server breaks off the chunked body; the client cannot take it as whole.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(f"{url}.json", timeout=30)
    # CSV reads every row for its columns before the first byte: an error status.
    assert session.get(f"{url}.csv", timeout=30).status_code == 500
    # A broken first row is read before the first byte too.
    break_user_attrs(study.trials.get(number=0).pk)
    assert session.get(f"{url}.json", timeout=30).status_code == 500
