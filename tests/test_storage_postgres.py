"""The storage suites again, on PostgreSQL: conformance, faithfulness, four processes;
the PostgreSQL settings."""

import os

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured

from optuna_hub.settings import database_from_url
from tests.conftest import run_suite_elsewhere


@pytest.mark.slow
def test_storage_suites_pass_on_postgresql(postgres_url):
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("this whole run already uses PostgreSQL")
    run_suite_elsewhere(
        ["tests/test_storage_conformance.py", "tests/test_storage.py"], DATABASE_URL=postgres_url
    )


def test_synchronous_commit_is_a_checked_setting_postgresql_takes(postgres_url, monkeypatch):
    assert "options" not in database_from_url(postgres_url).get("OPTIONS", {})
    monkeypatch.setenv("HUB_PG_SYNCHRONOUS_COMMIT", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="HUB_PG_SYNCHRONOUS_COMMIT must be one of"):
        database_from_url(postgres_url)
    monkeypatch.setenv("HUB_PG_SYNCHRONOUS_COMMIT", "off")
    options = database_from_url(postgres_url)["OPTIONS"]["options"]
    with psycopg.connect(postgres_url, options=options) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
