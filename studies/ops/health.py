"""What /readyz and ``manage.py hub_status`` check: database, migrations, broker, workers.

Each check is one cheap query or command, bounded in time, and says what is wrong
without anything secret: an exception's class, never its message (a database
error names the server and the user).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from studies.ops.clusters import broker_kind, live_clusters, ping_broker


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, bool | str]:
        return {"ok": self.ok, "detail": self.detail}


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answers"


def check_migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        n = len(plan)
        raise NotReady(f"{n} unapplied migration{'s' if n != 1 else ''}: run manage.py migrate")
    return "all applied"


def check_broker() -> str:
    ping_broker()
    return f"{broker_kind()} broker answers"


def check_workers() -> str:
    max_age = settings.HUB_READY_CLUSTER_MAX_AGE
    clusters = live_clusters(max_age)
    if not clusters:
        raise NotReady(f"no worker cluster seen in the last {max_age} s")
    age = clusters[0].age(timezone.now())
    workers = sum(c.workers for c in clusters)
    plural = "s" if len(clusters) != 1 else ""
    return f"{len(clusters)} cluster{plural}, {workers} workers, last heartbeat {age:.1f} s ago"


class NotReady(Exception):
    """A check ran and found the hub not ready; its message is safe to show."""


CHECKS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("database", check_database),
    ("migrations", check_migrations),
    ("broker", check_broker),
    ("workers", check_workers),
)


def run_check(name: str, check: Callable[[], str]) -> Check:
    try:
        return Check(name, True, check())
    except NotReady as e:
        return Check(name, False, str(e))
    except Exception as e:  # any failure is the answer, not a server error
        return Check(name, False, f"failed: {type(e).__name__}")


# A check that needs another's service is skipped when that one failed (no second timeout).
NEEDS = {"migrations": "database", "workers": "broker"}


def readiness() -> list[Check]:
    """Every check's result, in order."""
    results: dict[str, Check] = {}
    for name, check in CHECKS:
        needed = results.get(NEEDS.get(name, ""))
        if needed is not None and not needed.ok:
            results[name] = Check(name, False, f"skipped: the {needed.name} check failed")
        else:
            results[name] = run_check(name, check)
    return list(results.values())
