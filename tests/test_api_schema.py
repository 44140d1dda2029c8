"""The OpenAPI schema, the Swagger UI, and a fuzz of every operation in it."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from optuna_hub.wsgi import application
from studies.models import ApiToken, Study
from studies.storage import optuna_study_for
from tests.conftest import token_for

SPACE = {
    "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
    "x": {"type": "float", "low": -5, "high": 5},
    "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": ["dart"]}},
}


def test_the_schema_lists_every_endpoint_of_the_issue(client, alice):
    client.force_login(alice)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/auth/token/",
        "/api/studies/",
        "/api/studies/{id}/",
        "/api/studies/{id}/ask/",
        "/api/studies/{id}/enqueue/",
        "/api/studies/{study_id}/trials/",
        "/api/studies/{id}/trials.csv",
        "/api/studies/{id}/trials.json",
        "/api/trials/{id}/",
        "/api/trials/{id}/suggest/",
        "/api/trials/{id}/report/",
        "/api/trials/{id}/tell/",
        "/api/tokens/",
        "/api/tokens/{id}/",
    ]:
        assert path in paths


def test_swagger_ui_is_served_from_our_own_static_files(client, alice):
    client.force_login(alice)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    # Offline: every script and stylesheet comes from this server.
    assert "cdn" not in html.lower() and "https://" not in html
    bundle = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    assert bundle in html
    response = client.get(bundle)
    assert response.status_code == 200
    assert b"SwaggerUIBundle" in b"".join(response.streaming_content)


# Generated in-process, as /api/schema/ serves it to a signed-in user (no database
# is needed, nor a user at import time); the fuzz's requests go to the app itself.
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(public=True))
schema.app = application


@pytest.fixture
def fuzz_world(db, alice):
    """A study with trials in every state, so that ids in the fuzz often exist."""
    # Requests run in-process, like Django's test client, which also keeps the
    # test transaction's connection open across requests.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    token = token_for(alice)
    study = Study.objects.create(
        name="fuzzed", owner=alice, directions=["minimize"], search_space=SPACE
    )
    optuna_study = optuna_study_for(study)
    for i in range(3):
        trial = optuna_study.ask()
        trial.suggest_float("x", -5, 5)
        optuna_study.tell(trial, float(i))
    optuna_study.ask()
    optuna_study.enqueue_trial({"x": 1.0})
    trial_ids = list(study.trials.values_list("pk", flat=True))
    # The fuzz revokes tokens by id: this one, not the one it authenticates with.
    spare = ApiToken.issue(alice, "spare")[0]
    yield {
        "token": token,
        "study_ids": [study.pk],
        "trial_ids": trial_ids,
        "token_ids": [spare.pk],
    }
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_to_any_operation_is_a_server_error(case, fuzz_world):
    # Point generated ids at existing objects most of the time, so the fuzz
    # reaches the code behind the 404.
    pool = fuzz_world["trial_ids" if case.path.startswith("/api/trials/") else "study_ids"]
    tokens = case.path.startswith("/api/tokens/")
    if tokens:
        pool = fuzz_world["token_ids"]
    for key, value in (case.path_parameters or {}).items():
        if isinstance(value, int) and (value % 4 or tokens):
            case.path_parameters[key] = pool[value % len(pool)]
    case.call_and_validate(
        headers={"Authorization": f"Token {fuzz_world['token']}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


@pytest.mark.parametrize("url", ["/api/auth/token/", "/api/studies/"])
def test_bodies_too_deep_or_too_large_are_4xx_not_500(client, alice, url):
    client.force_login(alice)
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(url, deep, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - nested too deeply"}
    response = client.post(url, "x" * 3_000_000, content_type="application/json")
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


def test_unknown_api_paths_answer_json_404(client, alice):
    client.force_login(alice)
    for url in ["/api/nothing/", "/api/studies/1/nothing/", "/api/trials/x%0Ay/tell/"]:
        response = client.get(url)
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}
