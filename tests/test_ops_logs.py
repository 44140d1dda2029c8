"""Logs: one line per request and per job event, in text or JSON; the X-Request-ID."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import textwrap

import pytest
from django.conf import settings
from django.test import Client

from studies.jobs.base import finish
from studies.models import Job, Study
from studies.ops.logs import JsonFormatter
from tests.conftest import BASE_DIR, PYTHON, client_for

TEXT = logging.Formatter(settings.LOGGING["formatters"]["text"]["format"])
HEX_ID = re.compile(r"[0-9a-f]{32}")


def request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "optuna_hub.requests"]


def job_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "optuna_hub.jobs"]


def test_each_request_logs_one_line_with_its_fields_in_text(db, alice, caplog):
    caplog.set_level(logging.INFO, "optuna_hub")
    response = client_for(alice).get("/api/studies/?search=secret&page=1")
    assert response.status_code == 200
    (record,) = request_records(caplog)
    request_id = response["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    line = TEXT.format(record)
    pattern = (
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO optuna_hub.requests "
        rf"GET /api/studies/ 200 \d+\.\dms user={alice.pk} request_id={request_id}"
    )
    assert re.fullmatch(pattern, line), line
    assert "secret" not in line  # the query string is not logged


def test_the_json_format_is_one_object_per_line_with_the_same_fields(db, alice, caplog):
    caplog.set_level(logging.INFO, "optuna_hub")
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="lb-1234.abc_DEF")
    (record,) = request_records(caplog)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("duration_ms") >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry.pop("time"))
    assert entry == {
        "level": "INFO",
        "logger": "optuna_hub.requests",
        "message": entry["message"],
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "user": "-",
        "request_id": "lb-1234.abc_DEF",
    }
    assert entry["message"].startswith("GET /healthz 200 ")
    assert response["X-Request-ID"] == "lb-1234.abc_DEF"


@pytest.mark.parametrize(
    "header", ["x" * 65, "two words", "new\nline", "semi;colon", "ünïcode", ""]
)
def test_a_request_id_that_is_not_a_plain_token_is_replaced(db, header, caplog):
    caplog.set_level(logging.INFO, "optuna_hub")
    response = Client().get("/healthz", HTTP_X_REQUEST_ID=header)
    assert HEX_ID.fullmatch(response["X-Request-ID"])
    assert request_records(caplog)[0].request_id == response["X-Request-ID"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 302),  # the login redirect
        ("/accounts/login/", 200),
        ("/api/studies/", 401),
        ("/api/nothing/", 404),
        ("/no/such/page/", 404),
        ("/admin/", 302),
        ("/static/studies/hub.css", 200),  # served by WhiteNoise, before any view
    ],
)
def test_every_response_carries_its_request_id(db, path, status):
    response = Client().get(path, HTTP_X_REQUEST_ID="abc-123")
    assert response.status_code == status
    assert response["X-Request-ID"] == "abc-123"


def test_a_path_cannot_forge_a_log_line(db, caplog):
    caplog.set_level(logging.INFO, "optuna_hub")
    Client().get("/no/such%0A2026-01-01 INFO optuna_hub.requests GET /admin/ 200")
    (record,) = request_records(caplog)
    line = TEXT.format(record)
    assert "\n" not in line and "\\x0a" in line


def test_job_events_are_logged_with_the_request_id_that_started_them(
    db, alice, django_capture_on_commit_callbacks
):
    study = Study.objects.create(
        name="run", owner=alice, objective="sphere", directions=["minimize"]
    )
    # A handler formats at emission, as the console's does: the request id is the request's.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("optuna_hub")
    logger.addHandler(handler)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client_for(alice).post(
                f"/api/studies/{study.pk}/jobs/",
                {"n_trials": 4},
                format="json",
                HTTP_X_REQUEST_ID="start-1",
            )
        job = Job.objects.get()
        assert finish(job.pk, Job.SUCCEEDED, "n_trials")
        assert not finish(job.pk, Job.FAILED, "error")  # already finished: no second event
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 202
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    started, request, finished = entries
    assert started["event"] == "job_started" and started["request_id"] == "start-1"
    assert (started["job"], started["study"], started["user"]) == (job.pk, study.pk, alice.pk)
    assert started["message"] == (
        f"job {job.pk} started on study {study.pk} by user {alice.pk}: 4 trials, concurrency 1"
    )
    assert request["path"] == f"/api/studies/{study.pk}/jobs/" and request["status"] == 202
    assert finished["event"] == "job_finished" and "request_id" not in finished  # a worker's
    assert (finished["job"], finished["status"], finished["reason"]) == (
        job.pk,
        "succeeded",
        "n_trials",
    )
    assert finished["message"] == f"job {job.pk} finished: succeeded (n_trials)"


def test_a_cancelled_job_is_logged(db, alice, caplog):
    study = Study.objects.create(
        name="run", owner=alice, objective="sphere", directions=["minimize"]
    )
    response = client_for(alice).post(
        f"/api/studies/{study.pk}/jobs/", {"n_trials": 4}, format="json"
    )
    job_id = response.json()["id"]
    caplog.clear()
    response = client_for(alice).post(f"/api/jobs/{job_id}/cancel/")
    assert response.status_code in (200, 202), response.json()
    (record,) = job_records(caplog)
    assert record.event == "job_cancelled" and TEXT.format(record).endswith(
        f"INFO optuna_hub.jobs job {job_id} cancelled on study {study.pk} by user {alice.pk}"
    )


LOG_FORMAT_JSON = """
    import django, json, sys
    django.setup()
    from django.test import Client
    Client().get("/healthz?probe=1", HTTP_X_REQUEST_ID="probe-7")
    Client().get("/no/such/page/")
"""


def test_log_format_json_makes_every_line_on_stderr_a_json_object():
    result = subprocess.run(
        [PYTHON, "-c", textwrap.dedent(LOG_FORMAT_JSON)],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "optuna_hub.settings",
            "LOG_FORMAT": "json",
            "ALLOWED_HOSTS": "testserver",
            "HUB_NO_BOOTSTRAP": "1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    requests = [e for e in entries if e["logger"] == "optuna_hub.requests"]
    assert [(e["path"], e["status"], e["request_id"]) for e in requests][0] == (
        "/healthz",
        200,
        "probe-7",
    )
    assert requests[1]["status"] == 404
    # Django's own warning about the 404 is JSON too, with the request's id.
    (warning,) = [e for e in entries if e["logger"] == "django.request"]
    assert warning["level"] == "WARNING" and warning["request_id"] == requests[1]["request_id"]
