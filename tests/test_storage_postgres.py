"""The storage suites again, on PostgreSQL: conformance, faithfulness, four processes."""

import os

import pytest

from tests.conftest import run_suite_elsewhere


@pytest.mark.slow
def test_storage_suites_pass_on_postgresql(postgres_url):
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("this whole run already uses PostgreSQL")
    run_suite_elsewhere(
        ["tests/test_storage_conformance.py", "tests/test_storage.py"], DATABASE_URL=postgres_url
    )
