"""Scratch PostgreSQL databases for the benchmarks: created for a run, then dropped."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

POSTGRES_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    url = urlparse(POSTGRES_URL)
    try:
        with socket.create_connection((url.hostname, url.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def create_postgres_database(name: str) -> str:
    """Create (anew) database ``name`` beside HUB_TEST_POSTGRES_URL's; return its URL."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return urlparse(POSTGRES_URL)._replace(path=f"/{name}").geturl()


def drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
