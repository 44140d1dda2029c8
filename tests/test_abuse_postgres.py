"""The abuse tests again, on PostgreSQL: every refusal and limit must hold there too.

PostgreSQL differs where it matters here: it refuses NUL characters in text,
takes row locks for real (select_for_update), and checks types strictly.
"""

import os

import pytest

from tests.conftest import run_suite_elsewhere

ABUSE_FILES = [
    "tests/test_abuse_input.py",
    "tests/test_abuse_limits.py",
    "tests/test_abuse_concurrency.py",
    "tests/test_abuse_accounts.py",
    "tests/test_abuse_tokens.py",
    "tests/test_abuse_commands.py",
    "tests/test_abuse_pages.py",
]


@pytest.mark.slow
def test_the_abuse_tests_pass_on_postgresql(postgres_url):
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("this whole run already uses PostgreSQL")
    # The live-server ones (slow) run on SQLite only: their fixes are the same code.
    run_suite_elsewhere([*ABUSE_FILES, "-m", "not slow"], DATABASE_URL=postgres_url)
