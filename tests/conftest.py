"""Fixtures every test file shares: users, services, and real hub processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from rest_framework.test import APIClient

from studies.models import ApiToken

POSTGRES_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("HUB_REQUIRE_SERVICES") == "1"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> str:
    """Return the URL, or skip (fail when HUB_REQUIRE_SERVICES=1) when it is unreachable."""
    if not _reachable(url):
        message = f"{name} is not reachable at {url}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and HUB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return url


@pytest.fixture(autouse=True)
def fresh_storage_cache() -> Iterator[None]:
    """Each test starts with an empty process-wide storage cache.

    Test databases roll back, so ids are reused between tests; in production they never are.
    """
    from studies.storage import get_storage

    get_storage.cache_clear()
    yield
    get_storage.cache_clear()


@pytest.fixture
def postgres_url() -> str:
    return require_service("PostgreSQL", POSTGRES_URL)


@pytest.fixture
def redis_url() -> str:
    return require_service("Redis", REDIS_URL)


def token_for(user, name: str = "tests", **token: Any) -> str:
    """A new API token's key for ``user`` (the database keeps only its hash).

    ``token``: what ApiToken.issue also takes (scope, team, expires_at).
    """
    return ApiToken.issue(user, name, **token)[1]


def client_for(user, **token: Any) -> APIClient:
    """An API client that authenticates as ``user`` with a token, as scripts do."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user, **token)}")
    return client


@pytest.fixture
def api(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-password", is_staff=True)


# Real hub processes. Tests using them need `transactional_db` (a subprocess sees
# only committed rows); they point the process at the test database.

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a hub process that uses this test run's database."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    settings_module = {"DJANGO_SETTINGS_MODULE": "optuna_hub.settings"}
    return {**os.environ, **settings_module, "DATABASE_URL": url, "HUB_NO_BOOTSTRAP": "1", **extra}


def run_suite_elsewhere(files: list[str], timeout: float = 900, **env: str) -> str:
    """Run test files in a pytest subprocess with ``env`` (e.g. DATABASE_URL); return its summary.

    The database a test run uses is fixed when Django starts, so running a suite
    on another backend takes another process. Fails unless every test passed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *files],
        cwd=BASE_DIR,
        env={**os.environ, "HUB_NO_BOOTSTRAP": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary
    return summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate`` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for {what}")


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port} within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def hub_server(transactional_db) -> Iterator[str]:
    """A real gunicorn serving the hub on the test database; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "optuna_hub.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--log-level",
            "warning",
            "--no-control-socket",
        ],
        cwd=BASE_DIR,
        env=subprocess_env(),
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture
def start_qcluster(transactional_db) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real `manage.py qcluster` processes; all are stopped after the test."""
    processes: list[subprocess.Popen] = []

    def start(log: Path | None = None, **env: str) -> subprocess.Popen:
        # With ``log``, the cluster's output (tracebacks included) goes to that file.
        output = open(log, "ab") if log else None  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [PYTHON, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            start_new_session=True,  # so a test can SIGKILL the whole cluster
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        if output:
            output.close()  # the child has its own copy
        processes.append(process)
        return process

    yield start
    # SIGTERM to the cluster's main process stops it in about a second; sent to
    # the whole group it hangs (django-q2's sentinel dies before it can stop).
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left (a busy worker)
        except ProcessLookupError:
            pass
        process.wait()
