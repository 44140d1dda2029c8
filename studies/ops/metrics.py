"""/metrics: the hub's state in Prometheus's text format, and who may read it.

Two kinds of series:
- read from the database (and the broker) at each scrape, each one aggregate
  query whatever the hub's size: trials by state (the studies' counters), a
  histogram of finished trials' durations, jobs by status, job slots and the
  queue, the worker clusters;
- counted by each web process: request latency by endpoint group, asks and
  tells. With PROMETHEUS_MULTIPROC_DIR set (``manage.py start`` sets it for its
  gunicorn) every process writes them to files there and a scrape adds them up,
  whichever process answers it.

Label values come from fixed sets (states, statuses, endpoint groups), except the
per-study series, which are off unless HUB_METRICS_PER_STUDY (their number grows
with the hub), and the live clusters.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, F, Min, Q, Sum
from django.http import HttpRequest
from django.utils import timezone
from optuna.trial import TrialState
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from studies.jobs.fair import active_slots
from studies.lockout import client_ip
from studies.models import Job, JobSlot, Study, Trial
from studies.ops.clusters import live_clusters, queued_tasks

# prometheus_client picks its storage when imported, from this variable: so do we.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
PREFIX = "optuna_hub"
# The *_created series (when each counter started) would double the output for little.
disable_created_metrics()

# Endpoint groups: the first matching path prefix; anything else is a page.
GROUPS = (
    ("/api/storage/", "remote"),
    ("/api/", "api"),
    ("/admin/", "admin"),
    ("/static/", "static"),
    ("/healthz", "ops"),
    ("/readyz", "ops"),
    ("/metrics", "ops"),
)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
VIAS = ("api", "remote")
TOLD_STATES = ("complete", "pruned", "fail")

REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer a request, by endpoint group and status class.",
    ["group", "status"],
)
ASKS = Counter(f"{PREFIX}_asks", "Trials started by an ask (REST API or remote storage).", ["via"])
TELLS = Counter(
    f"{PREFIX}_tells", "Trials finished by a tell (REST API or remote storage).", ["via", "state"]
)
for _via in VIAS:
    ASKS.labels(via=_via)
    for _state in TOLD_STATES:
        TELLS.labels(via=_via, state=_state)

# Finished trials' durations (seconds): from a fraction of a second to a day.
DURATION_BUCKETS = (0.01, 0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 86400)


def endpoint_group(path: str) -> str:
    return next((group for prefix, group in GROUPS if path.startswith(prefix)), "page")


def observe_request(path: str, status: int, seconds: float) -> None:
    status_class = f"{status // 100}xx" if 100 <= status < 600 else "5xx"
    REQUEST_SECONDS.labels(group=endpoint_group(path), status=status_class).observe(seconds)


def count_ask(via: str) -> None:
    ASKS.labels(via=via).inc()


def count_tell(via: str, state: TrialState) -> None:
    TELLS.labels(via=via, state=state.name.lower()).inc()


# Who may scrape


@functools.cache
def allowed_networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as e:
        raise ImproperlyConfigured(f"HUB_METRICS_ALLOWED_IPS: {e}") from None


def address_allowed(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(
        ip in network for network in allowed_networks(tuple(settings.HUB_METRICS_ALLOWED_IPS))
    )


def may_scrape(request: HttpRequest) -> bool:
    """The right bearer token, or an allowed address; a wrong token is refused anywhere."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        token = settings.HUB_METRICS_TOKEN
        return bool(token) and hmac.compare_digest(credentials.strip().encode(), token.encode())
    if not settings.HUB_BEHIND_PROXY and "HTTP_X_FORWARDED_FOR" in request.META:
        # A proxy the hub was not told about passed it on: the connecting address
        # (often 127.0.0.1) is the proxy's, not the client's.
        return False
    return address_allowed(client_ip(request))


# What a scrape reads


def trials_by_state() -> Metric:
    family = GaugeMetricFamily(
        f"{PREFIX}_trials", "Trials by state, in all studies.", labels=["state"]
    )
    sums = Study.objects.aggregate(
        **{s.name: Sum(f"n_{s.name.lower()}", default=0) for s in TrialState}
    )
    for state in TrialState:
        family.add_metric([state.name.lower()], sums[state.name])
    return family


def trials_by_study() -> Metric:
    family = GaugeMetricFamily(
        f"{PREFIX}_study_trials",
        "Trials by study and state.",
        labels=["study_id", "study", "state"],
    )
    fields = [f"n_{s.name.lower()}" for s in TrialState]
    for pk, name, *counts in Study.objects.order_by("pk").values_list("pk", "name", *fields):
        for state, n in zip(TrialState, counts, strict=True):
            family.add_metric([str(pk), name, state.name.lower()], n)
    return family


# Finished trials never change, so a study's durations change only with its
# count of finished trials: each process keeps every study's bucket counts and,
# at a scrape, reads again only the studies whose count moved (one grouped pass
# over the covering index (study, elapsed, number)). The first scrape reads all.
# {study id: ((created_at, finished), [count per bucket..., count], sum)}
_durations: dict[int, tuple[tuple[Any, int], list[int], float]] = {}
_durations_lock = threading.Lock()
# More studies to read again than this: one pass over all trials (no huge IN list).
MAX_STUDIES_IN = 500


def read_durations(study_ids: list[int] | None) -> dict[int, tuple[list[int], float]]:
    trials = Trial.objects.filter(elapsed__isnull=False)
    if study_ids is not None:
        trials = trials.filter(study_id__in=study_ids)
    buckets = {
        f"le_{i}": Count("pk", filter=Q(elapsed__lte=b)) for i, b in enumerate(DURATION_BUCKETS)
    }
    rows = (
        trials.order_by()
        .values("study_id")
        .annotate(n=Count("pk"), total=Sum("elapsed", default=0.0), **buckets)
    )
    return {
        row["study_id"]: (
            [row[f"le_{i}"] for i in range(len(DURATION_BUCKETS))] + [row["n"]],
            row["total"],
        )
        for row in rows
    }


def trial_durations() -> Metric:
    """Finished trials by duration (a histogram summed over the studies)."""
    finished = F("n_complete") + F("n_pruned") + F("n_fail")
    keys = {
        pk: (created, n)
        for pk, created, n in Study.objects.values_list("pk", "created_at", finished)
    }
    empty = ([0] * (len(DURATION_BUCKETS) + 1), 0.0)
    with _durations_lock:
        stale = [pk for pk, key in keys.items() if _durations.get(pk, (None,))[0] != key]
        if stale:
            found = read_durations(stale if len(stale) <= MAX_STUDIES_IN else None)
            for pk in stale:
                _durations[pk] = (keys[pk], *found.get(pk, empty))
        for pk in set(_durations) - set(keys):
            del _durations[pk]  # deleted
        counts = [
            sum(column) for column in zip(*(c for _, c, _ in _durations.values()), strict=True)
        ]
        total = sum(t for _, _, t in _durations.values())
    counts = counts or empty[0]
    family = HistogramMetricFamily(
        f"{PREFIX}_trial_duration_seconds", "Durations of finished trials (start to finish)."
    )
    bounds = [str(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]
    family.add_metric([], list(zip(bounds, counts, strict=True)), sum_value=total)
    return family


def jobs_by_status() -> Metric:
    family = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs by status.", labels=["status"])
    counts = dict(Job.objects.order_by().values_list("status").annotate(n=Count("pk")))
    for status, _ in Job.STATUS_CHOICES:
        family.add_metric([status], counts.get(status, 0))
    return family


def job_slots() -> Iterator[Metric]:
    """Slots of active jobs: running (leased by a worker), queued, or parked and why."""
    queued = Q(token="", waiting="")
    parked = {reason: Q(token="", waiting=reason) for reason, _ in JobSlot.WAITING_CHOICES[1:]}
    row = active_slots().aggregate(
        running=Count("pk", filter=~Q(token="")),
        queued=Count("pk", filter=queued),
        oldest=Min("enqueued_at", filter=queued),
        **{reason: Count("pk", filter=q) for reason, q in parked.items()},
    )
    family = GaugeMetricFamily(
        f"{PREFIX}_job_slots",
        "Slots (trials at once) of active jobs: running, queued for a worker, or parked "
        "(delay; limit: its user's or team's most running slots; turn: another user's first).",
        labels=["state"],
    )
    for state in ("running", "queued", *parked):
        family.add_metric([state], row[state])
    yield family
    age = (timezone.now() - row["oldest"]).total_seconds() if row["oldest"] else 0.0
    yield GaugeMetricFamily(
        f"{PREFIX}_queue_oldest_age_seconds",
        "How long the slot queued longest has waited for a worker (0: none queued).",
        value=max(0.0, age),
    )


def broker_and_clusters() -> Iterator[Metric]:
    """The broker's queue and the live worker clusters; a broker that fails says 0, not 500."""
    up = GaugeMetricFamily(f"{PREFIX}_broker_up", "Whether the queue's broker answered.")
    try:
        tasks = queued_tasks()
        clusters = live_clusters()
    except Exception:
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    yield GaugeMetricFamily(
        f"{PREFIX}_broker_queued_tasks", "Tasks waiting in the broker's queue.", value=tasks
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_worker_clusters",
        "Worker clusters alive (stats saved within 3 s).",
        value=len(clusters),
    )
    heartbeat = GaugeMetricFamily(
        f"{PREFIX}_worker_cluster_heartbeat_timestamp_seconds",
        "When each live worker cluster last saved its stats (Unix time).",
        labels=["cluster", "host"],
    )
    workers = GaugeMetricFamily(
        f"{PREFIX}_worker_cluster_workers",
        "Worker processes of each live cluster.",
        labels=["cluster", "host"],
    )
    for cluster in clusters:
        heartbeat.add_metric([cluster.name, cluster.host], cluster.heartbeat.timestamp())
        workers.add_metric([cluster.name, cluster.host], cluster.workers)
    yield heartbeat
    yield workers


class HubCollector:
    """The series read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield trials_by_state()
        if settings.HUB_METRICS_PER_STUDY:
            yield trials_by_study()
        yield trial_durations()
        yield jobs_by_status()
        yield from job_slots()
        yield from broker_and_clusters()


def render() -> bytes:
    """The text a scrape gets: this process's (or all processes') counters, then the hub's."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(HubCollector())
    return generate_latest(registry)


def fresh_multiprocess_dir(var_dir: Path) -> Path:
    """An empty directory for the web processes' metric files (old processes' are stale)."""
    path = var_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
