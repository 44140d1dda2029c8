"""/healthz, /readyz and `manage.py hub_status`: what a load balancer and an operator see."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
import requests
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from studies.ops import clusters, health
from tests.conftest import BASE_DIR, PYTHON, free_port, subprocess_env, wait_for


def ready(client: Client | None = None) -> tuple[int, dict]:
    response = (client or Client()).get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def hub_status() -> tuple[int, str]:
    """Run the command in a process of its own, as an operator's shell does."""
    result = subprocess.run(
        [PYTHON, "manage.py", "hub_status"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout


def test_healthz_answers_without_a_login_or_the_database(db, client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_only_get_is_answered_and_csrf_never_gets_in_the_way(db, path, method):
    client = Client(enforce_csrf_checks=True)
    assert getattr(client, method)(path).status_code == 405


def test_readyz_without_a_worker_cluster_is_503_naming_the_check(db):
    status, body = ready()
    assert status == 503 and body["status"] == "unavailable"
    checks = body["checks"]
    assert list(checks) == ["database", "migrations", "broker", "workers"]
    assert checks["database"]["ok"] and checks["migrations"]["ok"] and checks["broker"]["ok"]
    assert checks["workers"] == {
        "ok": False,
        "detail": "no worker cluster seen in the last 120 s",
    }


def test_readyz_says_nothing_secret_when_the_database_fails(db, monkeypatch):
    secret = "connection to server at db.internal.example (10.0.0.7) failed for user hub"

    class Unreachable:
        vendor = "postgresql"

        def cursor(self):
            raise OperationalError(secret)

    monkeypatch.setattr(health, "connection", Unreachable())
    status, body = ready()
    assert status == 503
    assert body["checks"]["database"] == {"ok": False, "detail": "failed: OperationalError"}
    assert body["checks"]["migrations"]["detail"] == "skipped: the database check failed"
    text = json.dumps(body)
    assert "db.internal" not in text and "10.0.0.7" not in text
    assert str(connection.settings_dict["NAME"]) not in text


def test_readyz_names_unapplied_migrations(db, monkeypatch):
    plan = [("studies", "9999_future"), ("studies", "9999_later")]
    monkeypatch.setattr(health.MigrationExecutor, "migration_plan", lambda self, targets: plan)
    status, body = ready()
    assert status == 503
    assert body["checks"]["migrations"] == {
        "ok": False,
        "detail": "2 unapplied migrations: run manage.py migrate",
    }


def test_a_cluster_starting_stopping_or_too_old_does_not_count(db, monkeypatch):
    class FakeStat:  # what django-q2's sentinel saves
        def __init__(self, status: str, age: float) -> None:
            self.cluster_id = uuid.uuid4()
            self.host, self.workers, self.status = "w1", [1, 2], status
            self.timestamp = timezone.now() - timedelta(seconds=age)

    stats = [FakeStat("Starting", 0), FakeStat("Stopping", 0), FakeStat("Idle", 500)]
    stats.append(FakeStat("Working", 1))
    monkeypatch.setattr(clusters.Stat, "get_all", lambda broker: stats)
    live = clusters.live_clusters(120)
    assert [c.status for c in live] == ["Working"] and live[0].workers == 2
    status, body = ready()
    assert status == 200, body
    assert body["checks"]["workers"]["detail"].startswith("1 cluster, 2 workers, last heartbeat")


def test_hub_status_prints_one_line_per_check_and_exits_1_when_not_ready(db, capsys):
    with pytest.raises(SystemExit) as exit:
        call_command("hub_status")
    assert exit.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [
        ["database", "ok"],
        ["migrations", "ok"],
        ["broker", "ok"],
        ["workers", "FAIL"],
    ]
    assert lines[-1] == "not ready"


@pytest.mark.slow
def test_a_live_cluster_makes_the_hub_ready_and_its_stop_unready(start_qcluster, hub_server):
    def status() -> tuple[int, dict]:
        response = requests.get(f"{hub_server}/readyz", timeout=10)
        return response.status_code, response.json()

    assert status()[0] == 503
    assert hub_status()[0] == 1
    cluster = start_qcluster()
    code, body = wait_for(lambda: (s := status())[0] == 200 and s, 30, "the hub to be ready")
    assert body["status"] == "ok"
    assert body["checks"]["workers"]["detail"].startswith("1 cluster, 2 workers")
    code, out = hub_status()
    assert code == 0 and out.splitlines()[-1] == "ready", out
    cluster.terminate()
    cluster.wait(30)
    # Its stats expire 3 s after its last save.
    wait_for(lambda: status()[0] == 503, 15, "the hub to notice the cluster stopped")


@pytest.mark.slow
def test_an_unreachable_redis_broker_fails_the_check_quickly(db):
    # Nothing listens on the port: refused at once; a silent host would take BROKER_TIMEOUT.
    env = subprocess_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    result = subprocess.run(
        [PYTHON, "manage.py", "hub_status"], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    assert time.monotonic() - start < 30
    assert result.returncode == 1, result.stderr[-2000:]
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines()[:4])
    assert lines["broker"] == "FAIL  failed: ConnectionError"
    assert lines["workers"] == "FAIL  skipped: the broker check failed"


@pytest.mark.slow
def test_a_cluster_on_the_redis_broker_is_seen(start_qcluster, redis_url):
    env = {"REDIS_URL": redis_url, "HUB_QUEUE_NAME": f"ops-health-{free_port()}"}
    result = subprocess.run(
        [PYTHON, "manage.py", "hub_status"],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "no worker cluster seen" in result.stdout
    start_qcluster(**env)

    def status() -> subprocess.CompletedProcess | None:
        done = subprocess.run(
            [PYTHON, "manage.py", "hub_status"],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
        )
        return done if done.returncode == 0 else None

    done = wait_for(status, 60, "hub_status to see the cluster on Redis")
    assert "redis broker answers" in done.stdout and "1 cluster" in done.stdout
