"""/metrics: Prometheus's text, real values, and a 404 to anyone but its scrapers."""

from __future__ import annotations

import os
import signal

import optuna
import pytest
import requests
from django.test import Client
from optuna_hub_client import HubStorage
from prometheus_client.parser import text_string_to_metric_families

from studies.models import Study, Trial
from studies.ops.metrics import GROUPS
from tests.conftest import client_for, free_port, token_for, wait_for_port
from tests.test_start import PASSWORD, start_hub

TOKEN = "s3cret-metrics-token"
OUTSIDE = "203.0.113.9"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(client: Client | None = None, **headers: str) -> dict:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def complete_trials(api, study_id: int, n: int) -> None:
    for i in range(n):
        trial = api.post(f"/api/studies/{study_id}/ask/", {}, format="json").json()
        response = api.post(
            f"/api/trials/{trial['trial_id']}/tell/", {"values": [float(i)]}, format="json"
        )
        assert response.status_code == 200, response.json()


@pytest.fixture
def study_id(api) -> int:
    space = {"x": {"type": "float", "low": 0, "high": 1}}
    response = api.post("/api/studies/", {"name": "watched", "search_space": space}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


# Who may read it


def test_a_local_scraper_reads_it_without_a_token(db):
    assert Client().get("/metrics").status_code == 200  # REMOTE_ADDR is 127.0.0.1


def test_another_address_gets_a_404_as_if_there_were_nothing(db):
    response = Client().get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 404
    assert b"optuna_hub" not in response.content


def test_the_token_opens_it_from_anywhere_and_a_wrong_one_nowhere(db, settings):
    settings.HUB_METRICS_TOKEN = TOKEN
    client = Client(REMOTE_ADDR=OUTSIDE)
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    for wrong in (f"Bearer {TOKEN}x", "Bearer ", f"Bearer {TOKEN[:-1]}", "Basic abc"):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 404, wrong
    # From an allowed address too: a wrong token is a mistake worth noticing.
    local = Client()
    assert local.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 404


def test_without_a_token_set_no_bearer_opens_it(db, settings):
    settings.HUB_METRICS_TOKEN = ""
    client = Client(REMOTE_ADDR=OUTSIDE)
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_allowed_addresses_may_be_networks(db, settings):
    settings.HUB_METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="2001:db8::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="11.1.2.3").get("/metrics").status_code == 404
    assert Client().get("/metrics").status_code == 404  # 127.0.0.1 is no longer listed


def test_a_request_through_a_proxy_the_hub_does_not_know_is_not_local(db, settings):
    # A proxy on the same machine connects from 127.0.0.1 for every client.
    forwarded = {"HTTP_X_FORWARDED_FOR": OUTSIDE}
    assert Client().get("/metrics", **forwarded).status_code == 404
    settings.HUB_BEHIND_PROXY = True
    assert Client().get("/metrics", **forwarded).status_code == 404
    assert Client().get("/metrics", HTTP_X_FORWARDED_FOR=f"{OUTSIDE}, 127.0.0.1").status_code == 200


def test_only_get_is_answered(db):
    assert Client().post("/metrics").status_code == 405


# What it says


def test_trials_by_state_and_the_ask_and_tell_counters(api, study_id):
    before = scrape()
    complete_trials(api, study_id, 3)
    api.post(f"/api/studies/{study_id}/ask/", {}, format="json")  # one left running
    after = scrape()
    assert value(after, "optuna_hub_trials", state="complete") == 3
    assert value(after, "optuna_hub_trials", state="running") == 1
    assert value(after, "optuna_hub_trials", state="fail") == 0
    asks = "optuna_hub_asks_total"
    assert value(after, asks, via="api") - value(before, asks, via="api") == 4
    tells = "optuna_hub_tells_total"
    told = value(after, tells, via="api", state="complete")
    assert told - value(before, tells, via="api", state="complete") == 3
    assert value(after, asks, via="remote") == value(before, asks, via="remote")


def test_trial_durations_are_a_histogram_of_finished_trials(api, study_id):
    complete_trials(api, study_id, 3)
    api.post(f"/api/studies/{study_id}/ask/", {}, format="json")  # running: not counted
    for number, seconds in enumerate([0.5, 30, 7200]):
        Trial.objects.filter(study_id=study_id, number=number).update(elapsed=seconds)
    samples = scrape()
    bucket = "optuna_hub_trial_duration_seconds_bucket"
    assert value(samples, bucket, le="0.1") == 0
    assert value(samples, bucket, le="1.0") == 1
    assert value(samples, bucket, le="60.0") == 2
    assert value(samples, bucket, le="3600.0") == 2
    assert value(samples, bucket, le="14400.0") == 3
    assert value(samples, bucket, le="+Inf") == 3
    assert value(samples, "optuna_hub_trial_duration_seconds_count") == 3
    assert value(samples, "optuna_hub_trial_duration_seconds_sum") == 7230.5


def test_durations_follow_new_trials_and_deleted_studies(api, study_id):
    count = "optuna_hub_trial_duration_seconds_count"
    complete_trials(api, study_id, 2)
    assert value(scrape(), count) == 2
    complete_trials(api, study_id, 1)  # the study's count moved: read again
    assert value(scrape(), count) == 3
    Study.objects.filter(pk=study_id).delete()
    assert value(scrape(), count) == 0


def test_jobs_slots_and_the_queue(db, alice, django_capture_on_commit_callbacks):
    study = Study.objects.create(
        name="run", owner=alice, objective="sphere", directions=["minimize"]
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            f"/api/studies/{study.pk}/jobs/", {"n_trials": 10, "concurrency": 3}, format="json"
        )
    assert response.status_code == 202, response.json()
    samples = scrape()
    assert value(samples, "optuna_hub_jobs", status="queued") == 1
    assert value(samples, "optuna_hub_jobs", status="succeeded") == 0
    assert value(samples, "optuna_hub_job_slots", state="queued") == 3
    assert value(samples, "optuna_hub_job_slots", state="running") == 0
    assert value(samples, "optuna_hub_broker_up") == 1
    assert value(samples, "optuna_hub_broker_queued_tasks") == 3
    assert 0 <= value(samples, "optuna_hub_queue_oldest_age_seconds") < 60
    assert value(samples, "optuna_hub_worker_clusters") == 0  # none runs in this test


def test_request_latency_is_labelled_by_endpoint_group_never_by_path(api, study_id, client):
    count = "optuna_hub_http_request_duration_seconds_count"
    before = scrape()
    api.get(f"/api/studies/{study_id}/")
    client.get(f"/studies/{study_id}/?secret=1")
    client.get("/no/such/page/")
    after = scrape()
    groups = {dict(labels)["group"] for name, labels in after if name == count}
    assert groups <= {group for _, group in GROUPS} | {"page"}
    assert value(after, count, group="api", status="2xx") > value(
        before, count, group="api", status="2xx"
    )
    assert value(after, count, group="page", status="4xx") >= 1  # the unknown page
    http = [dict(labels) for name, labels in after if name.startswith("optuna_hub_http")]
    assert all(set(labels) <= {"group", "status", "le"} for labels in http)
    assert all("/" not in v for labels in http for v in labels.values())


def test_per_study_series_only_when_asked_for(api, study_id, settings):
    complete_trials(api, study_id, 2)
    assert not [key for key in scrape() if key[0] == "optuna_hub_study_trials"]
    settings.HUB_METRICS_PER_STUDY = True
    samples = scrape()
    labels = {"study_id": str(study_id), "study": "watched"}
    assert value(samples, "optuna_hub_study_trials", **labels, state="complete") == 2


# The live server: gunicorn's processes add up (prometheus_client's multiprocess mode)


@pytest.fixture
def metrics_dir(tmp_path, monkeypatch) -> str:
    """PROMETHEUS_MULTIPROC_DIR for the hub processes a test starts (before hub_server)."""
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    return str(path)


@pytest.mark.slow
def test_the_live_server_counts_asks_of_all_its_processes(metrics_dir, hub_server, alice):
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token_for(alice)}"
    space = {"x": {"type": "float", "low": 0, "high": 1}}
    study = api.post(f"{hub_server}/api/studies/", json={"name": "live", "search_space": space})
    assert study.status_code == 201, study.text
    for _ in range(8):  # spread over gunicorn's two workers
        trial = api.post(f"{hub_server}/api/studies/{study.json()['id']}/ask/", json={}).json()
        api.post(f"{hub_server}/api/trials/{trial['trial_id']}/tell/", json={"values": [0.5]})
    for _ in range(4):  # whichever worker answers, the counts are the hub's
        response = requests.get(f"{hub_server}/metrics")
        assert response.status_code == 200 and response.headers["X-Request-ID"]
        samples = parse(response.text)
        assert value(samples, "optuna_hub_asks_total", via="api") == 8
        assert value(samples, "optuna_hub_tells_total", via="api", state="complete") == 8
        assert value(samples, "optuna_hub_trials", state="complete") == 8
    assert (
        requests.get(f"{hub_server}/metrics", headers={"X-Forwarded-For": "1.2.3.4"}).status_code
        == 404
    )


@pytest.mark.slow
def test_remote_storage_asks_and_tells_are_counted(metrics_dir, hub_server, alice):
    storage = HubStorage(hub_server, token_for(alice))
    study = optuna.create_study(study_name="remote", storage=storage)
    study.enqueue_trial({"x": 0.25})  # popped by the first ask: an ask, not a new trial
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study.ask()  # left running
    samples = parse(requests.get(f"{hub_server}/metrics").text)
    assert value(samples, "optuna_hub_asks_total", via="remote") == 4
    assert value(samples, "optuna_hub_tells_total", via="remote", state="complete") == 3
    assert value(samples, "optuna_hub_trials", state="complete") == 3
    assert value(samples, "optuna_hub_trials", state="running") == 1


@pytest.mark.slow
def test_manage_py_start_gives_its_web_processes_one_metrics_directory(tmp_path):
    stale = tmp_path / "metrics" / "counter_1.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a previous run")
    port = free_port()
    hub = start_hub(tmp_path, port)
    try:
        wait_for_port(port, hub, timeout=60)
        base = f"http://127.0.0.1:{port}"
        token = requests.post(
            f"{base}/api/auth/token/", json={"username": "admin", "password": PASSWORD}
        ).json()["token"]
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        study = api.post(f"{base}/api/studies/", json={"name": "started"}).json()
        space = {"x": {"type": "float", "low": 0, "high": 1}}
        for _ in range(6):
            body = {"search_space": space}
            assert api.post(f"{base}/api/studies/{study['id']}/ask/", json=body).ok
        for _ in range(4):
            samples = parse(requests.get(f"{base}/metrics").text)
            assert value(samples, "optuna_hub_asks_total", via="api") == 6
        assert not stale.exists()
        assert any(name.startswith("counter_") for name in os.listdir(tmp_path / "metrics"))
    finally:
        if hub.poll() is None:
            os.killpg(hub.pid, signal.SIGINT)  # Ctrl-C, as tests/test_start.py stops it
        out, err = hub.communicate(timeout=60)
    assert hub.returncode == 0, err[-3000:]
    assert "GET /metrics 200" in err  # the web processes' request lines
