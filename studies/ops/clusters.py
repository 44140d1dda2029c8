"""The queue's broker and the worker clusters alive on it, each read within a time bound.

django-q2's sentinel saves its cluster's stats (a ``Stat``: pid, workers, status,
a timestamp) every half second with a 3-second expiry: in Redis with the Redis
broker, in Django's cache with the ORM broker. The hub's default cache is per
process, so with the ORM broker settings give django-q2 a file cache under
HUB_VAR_DIR that the processes of one machine share (``stats_key`` keeps apart the
clusters of different databases sharing it, such as test runs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.humanhash import humanize
from django_q.status import Stat

# Seconds a Redis command may take before the check says the broker is down.
BROKER_TIMEOUT = 2.0


def stats_key(key: str, key_prefix: str, version: int) -> str:
    """The cluster stats cache's KEY_FUNCTION: one namespace per database."""
    return f"{connection.settings_dict['NAME']}:{key_prefix}:{version}:{key}"


def broker_kind() -> str:
    return "redis" if settings.REDIS_URL else "orm"


@functools.cache
def broker() -> Broker:
    """This process's broker, whose Redis commands time out (django-q2's wait forever)."""
    found = get_broker()
    if isinstance(found, Redis) and isinstance(Conf.REDIS, str):
        found.connection = redis.from_url(
            Conf.REDIS, socket_timeout=BROKER_TIMEOUT, socket_connect_timeout=BROKER_TIMEOUT
        )
    return found


def ping_broker() -> None:
    """Raise unless the broker answers: Redis's PING, or a query of the ORM broker's table."""
    if isinstance(broker(), Redis):
        broker().connection.ping()
    else:
        broker().queue_size()


def queued_tasks() -> int:
    """Tasks waiting in the broker's queue (not those a worker is running)."""
    return broker().queue_size()


@dataclass(frozen=True)
class Cluster:
    name: str  # django-q2's human name of its id, as its own log lines say it
    host: str
    workers: int
    status: str
    heartbeat: datetime

    def age(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat).total_seconds())


def live_clusters(max_age: float | None = None) -> list[Cluster]:
    """The clusters running (started, not stopping) that saved their stats within ``max_age`` s.

    Stats expire 3 s after a cluster's last save, so those found are alive; the
    age bound also catches a host whose clock is far off.
    """
    max_age = settings.HUB_READY_CLUSTER_MAX_AGE if max_age is None else max_age
    now = timezone.now()
    found = []
    for stat in Stat.get_all(broker()):
        cluster = Cluster(
            name=humanize(stat.cluster_id.hex),
            host=stat.host,
            workers=len(stat.workers),
            status=str(stat.status),
            heartbeat=stat.timestamp,
        )
        running = cluster.status in (str(Conf.IDLE), str(Conf.WORKING))
        if running and cluster.age(now) <= max_age:
            found.append(cluster)
    return sorted(found, key=lambda c: c.heartbeat, reverse=True)
