"""The worker tests again on PostgreSQL and the Redis broker.

The database a test run uses is fixed when Django starts, so the honest way to
run a module on PostgreSQL is a pytest subprocess with DATABASE_URL set (and
REDIS_URL, which switches the broker for the test process and the workers it
starts). The queue name is unique to this run, so runs sharing the Redis server
do not take each other's tasks.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_suite_elsewhere


@pytest.mark.slow
def test_jobs_on_real_workers_pass_on_postgresql_with_the_redis_broker(postgres_url, redis_url):
    if os.environ.get("REDIS_URL"):
        pytest.skip("this whole run already uses Redis")
    summary = run_suite_elsewhere(
        ["tests/test_jobs_workers.py"],
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        HUB_QUEUE_NAME=f"optuna-hub-test-{os.getpid()}",
    )
    assert "6 passed" in summary, summary
