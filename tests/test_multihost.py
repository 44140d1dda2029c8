"""A real multi-host run (issue #13): a worker host is cut off in the middle of a job.

Linux network namespaces (tests/netns.py) stand for three hosts on this machine:
two worker hosts running `manage.py qcluster` and one running the web server
(gunicorn). PostgreSQL and Redis stay where they are and reach each host through
socat forwarders on its veth link; a namespace has no other route, so all of the
hub's traffic stays on the links this test made. The hub runs on a scratch
database made for this module; the test drives it over HTTP, as a user would, and
reads the outcome straight from the database.

A job with concurrency 4 runs two slots on each worker host, then host 1 is cut off:

- killed (its link down, then its processes): host 2 takes its slots over, the
  trials it lost are re-run with the same params, the job ends with exactly
  n_trials, and nothing changes when the link comes back and the dead host's
  connections end;
- frozen (SIGSTOP, its link down), and continued once host 2 has taken over with
  its link back up: its stale leases must write nothing.

A host is cut off at a moment it holds no transaction open: PostgreSQL keeps the
row locks of a transaction cut off in the middle until it notices the connection
is dead (without keepalives or idle_in_transaction_session_timeout, hours later),
and every host would wait on the job's row until then.

Needs root (skips otherwise; fails instead under HUB_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import ParseResult, urlparse

import optuna
import psycopg
import pytest
import redis
import requests
from optuna.trial import TrialState
from picklefield.fields import dbsafe_decode

from tests import netns
from tests.conftest import (
    BASE_DIR,
    POSTGRES_URL,
    PYTHON,
    REDIS_URL,
    REQUIRE_SERVICES,
    require_service,
    subprocess_env,
    wait_for,
)
from tests.test_jobs_workers import WORKER_ENV

pytestmark = pytest.mark.slow

TRIAL_SECONDS = 1.0
N_TRIALS = 40
CONCURRENCY = 4
GRACE = int(WORKER_ENV["HUB_HEARTBEAT_GRACE"])
REDIS_DB = 13
WEB_PORT = 8000
RUNNING, COMPLETE, FAIL = (int(TrialState[s]) for s in ("RUNNING", "COMPLETE", "FAIL"))


def slow_sphere(trial: optuna.Trial) -> float:
    """A sphere that takes a second per trial, so a host can be cut off in mid-trial."""
    x = trial.suggest_float("x", -1, 1)
    y = trial.suggest_float("y", -1, 1)
    time.sleep(TRIAL_SECONDS)
    return x * x + y * y


def unavailable(reason: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} and HUB_REQUIRE_SERVICES=1")
    pytest.skip(reason)


class Hub:
    """The hub's hosts, its web server's URL, a user's token, and the scratch database."""

    def __init__(self, logs: Path, prefix: str) -> None:
        pid = os.getpid()
        self.logs = logs
        self.network = netns.Network(f"hub-{pid}", prefix)
        self.database = f"hub_multihost_{pid}"
        self.queue = f"optuna-hub-multihost-{pid}"
        self.postgres = urlparse(POSTGRES_URL)
        self.redis = urlparse(REDIS_URL)
        self.ports: dict[str, tuple[int, int]] = {}  # namespace -> (PostgreSQL, Redis)
        self.secret_key = secrets.token_urlsafe(50)
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy: straight to the web host's address
        self.token = ""

    def add_host(self, role: str) -> netns.Host:
        host = self.network.add_host(role)
        log = self.logs / "socat.log"
        pg = self.network.forward(host, self.postgres.hostname, self.postgres.port or 5432, log)
        rd = self.network.forward(host, self.redis.hostname, self.redis.port or 6379, log)
        self.ports[host.namespace] = (pg, rd)
        return host

    @property
    def web(self) -> netns.Host:
        return self.network.hosts[0]

    @property
    def workers(self) -> list[netns.Host]:
        return self.network.hosts[1:]

    @property
    def url(self) -> str:
        return f"http://{self.web.address}:{WEB_PORT}"

    def local_url(self) -> str:
        """The scratch database as this process reaches it (not through a host)."""
        return self.postgres._replace(path=f"/{self.database}").geturl()

    def env(self, host: netns.Host, **extra: str) -> dict[str, str]:
        """A hub process's environment on ``host``: the services through its own link."""
        pg, rd = self.ports[host.namespace]
        return subprocess_env(
            DATABASE_URL=f"postgresql://{userinfo(self.postgres)}{host.gateway}:{pg}/{self.database}",
            REDIS_URL=f"redis://{userinfo(self.redis)}{host.gateway}:{rd}/{REDIS_DB}",
            HUB_QUEUE_NAME=self.queue,
            HUB_OBJECTIVES=f"{__name__}.slow_sphere",
            HUB_VAR_DIR=str(self.logs / "var"),
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS=self.web.address,
            # The host's name on its database connections (pg_stat_activity).
            PGAPPNAME=host.namespace,
            **{**WORKER_ENV, **extra},
        )

    def manage(self, host: netns.Host, *args: str) -> str:
        result = host.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=self.env(host))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start_web(self) -> None:
        self.manage(self.web, "migrate", "--noinput")
        create = "from django.contrib.auth.models import User; User.objects.create_user('alice')"
        self.manage(self.web, "shell", "-c", create)
        self.token = self.manage(self.web, "create_token", "alice").strip().splitlines()[-1]
        bind = f"{self.web.address}:{WEB_PORT}"
        server = self.web.popen(
            [PYTHON, "-m", "gunicorn", "optuna_hub.wsgi", "--bind", bind, "--workers", "2"]
            + ["--threads", "4", "--log-level", "warning", "--no-control-socket"],
            self.logs / "web.log",
            cwd=BASE_DIR,
            env=self.env(self.web),
        )

        def answers() -> bool:
            assert server.poll() is None, (self.logs / "web.log").read_text()[-3000:]
            try:
                return self.http.get(f"{self.url}/api/", timeout=5).status_code > 0
            except requests.RequestException:  # not listening, or its workers still start
                return False

        wait_for(answers, 60, "the web server")

    def start_cluster(self, host: netns.Host, workers: int) -> subprocess.Popen:
        """A qcluster on ``host``, once it takes tasks from the queue."""
        log = self.logs / f"{host.namespace}.log"
        start = log.stat().st_size if log.exists() else 0
        cluster = host.popen(
            [PYTHON, "manage.py", "qcluster"],
            log,
            cwd=BASE_DIR,
            env=self.env(host, HUB_WORKERS=str(workers), LOG_LEVEL="INFO"),
        )

        def pushing() -> bool:
            assert cluster.poll() is None, log.read_text()[-3000:]
            return "pushing tasks at" in log.read_text()[start:]

        wait_for(pushing, 60, f"the cluster on {host.namespace} to take tasks")
        return cluster

    def api(self, method: str, path: str, **body: Any) -> dict[str, Any]:
        response = self.http.request(
            method,
            f"{self.url}{path}",
            json=body or None,
            headers={"Authorization": f"Token {self.token}"},
            timeout=30,
        )
        assert response.ok, response.text
        return response.json()

    def sql(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.local_url(), autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def forget_queue(self) -> None:
        broker = redis.Redis.from_url(self.redis._replace(path=f"/{REDIS_DB}").geturl())
        for key in broker.scan_iter(f"*{self.queue}*"):
            broker.delete(key)


def userinfo(url: ParseResult) -> str:
    """The ``user:password@`` part of a URL, if it has one."""
    return url.netloc.rpartition("@")[0] + "@" if "@" in url.netloc else ""


def create_database(hub: Hub) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{hub.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{hub.database}"')


def drop_database(hub: Hub) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{hub.database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    reason = netns.unavailable()
    if reason:
        unavailable(reason)
    require_service("PostgreSQL", POSTGRES_URL)
    require_service("Redis", REDIS_URL)
    try:
        prefix = netns.free_subnet(os.getpid() % 250)
    except netns.NetnsError as e:
        unavailable(f"cannot choose a subnet: {e}")
    hub = Hub(tmp_path_factory.mktemp("multihost"), prefix)
    with ExitStack() as cleanup:
        cleanup.callback(hub.network.close)
        try:
            for role in ("web", "w1", "w2"):
                hub.add_host(role)
        except netns.NetnsError as e:
            unavailable(f"cannot make network namespaces: {e}")
        create_database(hub)
        cleanup.callback(drop_database, hub)
        cleanup.callback(hub.forget_queue)
        # Stopped before the database goes: nothing may hold a connection to it.
        cleanup.callback(lambda: [host.kill_all() for host in hub.network.hosts])
        hub.forget_queue()
        hub.start_web()
        yield hub


class Run:
    """One job on the two worker hosts, and what the database says about it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.pids: dict[str, set[int]] = {host.namespace: set() for host in hub.workers}
        self.job = self.study = 0

    def start(self, name: str) -> None:
        """A job with concurrency 4 on both hosts: host 1 has two workers, host 2 four.

        Both clusters wait on the queue when the job's four tasks arrive, so Redis
        hands them out in turn, two to each; host 2 can run host 1's slots, too.
        """
        w1, w2 = self.hub.workers
        self.hub.start_cluster(w1, workers=2)
        self.hub.start_cluster(w2, workers=4)
        study = self.hub.api(
            "POST",
            "/api/studies/",
            name=name,
            directions=["minimize"],
            objective="slow_sphere",
            sampler={"type": "random", "options": {}, "seed": 0},
        )
        self.study = study["id"]
        job = self.hub.api(
            "POST", f"/api/studies/{self.study}/jobs/", n_trials=N_TRIALS, concurrency=CONCURRENCY
        )
        self.job = job["id"]

        def both_run() -> bool:
            complete = [t for t in self.trials().values() if t["state"] == COMPLETE]
            on_1, on_2 = self.leased_by(w1), self.leased_by(w2)
            return len(on_1) + len(on_2) == CONCURRENCY and all(
                any(self.ran_on(t, host) for t in complete) for host in (w1, w2)
            )

        self.wait(both_run, 60, "both hosts to run the job's four slots")

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """wait_for, saying on failure where the job and its slots stand."""
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe()}") from None

    def describe(self) -> str:
        hosts = {pid: host.namespace for host in self.hub.workers for pid in self.host_pids(host)}
        slots = [
            (slot["index"], hosts.get(pid_of(slot["worker"]), slot["worker"]), slot["fresh"])
            for slot in self.slots()
        ]
        states: Counter[tuple[str, str]] = Counter()
        for trial in self.trials().values():
            host = hosts.get(pid_of(trial["system_attrs"].get("hub_worker", "")), "?")
            states[host, TrialState(trial["state"]).name] += 1
        return f"job {self.job_row()}\nslots (index, host, fresh) {slots}\ntrials {dict(states)}"

    # What the database says

    def host_pids(self, host: netns.Host) -> set[int]:
        """The host's processes, those seen earlier included (a killed host has none left)."""
        seen = self.pids[host.namespace]
        seen |= host.pids()
        return seen

    def slots(self) -> list[dict[str, Any]]:
        rows = self.hub.sql(
            "SELECT index, token, worker, heartbeat > clock_timestamp() - %s * interval '1 second'"
            " FROM studies_jobslot WHERE job_id = %s ORDER BY index",
            GRACE,
            self.job,
        )
        keys = ("index", "token", "worker", "fresh")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def leased_by(self, host: netns.Host) -> list[int]:
        """The slots ``host`` holds a live lease on."""
        pids = self.host_pids(host)
        return [
            slot["index"]
            for slot in self.slots()
            if slot["token"] and slot["fresh"] and pid_of(slot["worker"]) in pids
        ]

    def trials(self) -> dict[int, dict[str, Any]]:
        keys = ("number", "state", "values", "params", "system_attrs")
        keys += ("datetime_start", "datetime_complete", "intermediate_values", "user_attrs")
        rows = self.hub.sql(
            f"SELECT {', '.join(keys)} FROM studies_trial WHERE study_id = %s ORDER BY number",
            self.study,
        )
        found = {}
        for row in rows:
            trial = dict(zip(keys, row, strict=True))
            for key in ("values", "params", "system_attrs", "intermediate_values", "user_attrs"):
                trial[key] = json.loads(trial[key]) if trial[key] else trial[key]
            found[trial["number"]] = trial
        return found

    def ran_on(self, trial: dict[str, Any], host: netns.Host) -> bool:
        return pid_of(trial["system_attrs"]["hub_worker"]) in self.host_pids(host)

    def job_row(self) -> dict[str, Any]:
        keys = ("status", "stop_reason", "error", "n_failed")
        (row,) = self.hub.sql(f"SELECT {', '.join(keys)} FROM studies_job WHERE id = %s", self.job)
        return dict(zip(keys, row, strict=True))

    def now(self) -> datetime:
        return self.hub.sql("SELECT clock_timestamp()")[0][0]

    def open_transactions(self, host: netns.Host) -> list[tuple]:
        """What the host's database connections do other than wait, idle, for a command."""
        return self.hub.sql(
            "SELECT state, query FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = %s AND state <> 'idle'",
            self.hub.database,
            host.namespace,
        )

    def finished(self, timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job_row()
            return job if job["status"] not in ("queued", "running") else None

        return self.wait(done, timeout, f"job {self.job} to end")

    # Cutting host 1 off

    def in_mid_trial(self, host: netns.Host) -> bool:
        """The host runs a trial that started a moment ago: it is inside the objective's sleep."""
        rows = self.hub.sql(
            "SELECT system_attrs FROM studies_trial WHERE study_id = %s AND state = %s"
            " AND datetime_start > clock_timestamp() - interval '0.4 seconds'",
            self.study,
            RUNNING,
        )
        pids = self.host_pids(host)
        return any(pid_of(json.loads(attrs)["hub_worker"]) in pids for (attrs,) in rows)

    def cut_off(self, host: netns.Host, freeze: bool) -> list[int]:
        """Cut the host's link in mid-trial (frozen first with ``freeze``); its running trials."""
        for _ in range(20):
            self.wait(lambda: self.in_mid_trial(host), 60, f"a trial starting on {host.namespace}")
            if freeze:
                host.signal_all(signal.SIGSTOP)
            else:
                host.cut()
            # What the host sent before has reached PostgreSQL a moment later (a local link).
            time.sleep(0.3)
            if not self.open_transactions(host):
                if freeze:
                    host.cut()
                return [
                    number
                    for number, trial in self.trials().items()
                    if trial["state"] == RUNNING and self.ran_on(trial, host)
                ]
            # Cut in the middle of a transaction: try again at another moment.
            if freeze:
                host.signal_all(signal.SIGCONT)
            else:
                host.reconnect()
        raise AssertionError(f"{host.namespace} always had a transaction open")

    def taken_over(self, by: netns.Host, slots: list[int], lost: list[int]) -> bool:
        """The lost trials failed, and ``by`` holds the leases of ``slots`` now."""
        trials = self.trials()
        return all(trials[n]["state"] == FAIL for n in lost) and set(slots) <= set(
            self.leased_by(by)
        )

    def stale_tasks(self, slots: list[int], frozen: datetime, resumed: datetime) -> list[str]:
        """The results of the tasks that ran ``slots`` when their host froze, once they ended."""
        rows = self.hub.sql(
            "SELECT result FROM django_q_task WHERE name = ANY(%s) AND started < %s"
            " AND stopped >= %s",
            [f"job-{self.job}-slot-{index}" for index in slots],
            frozen,
            resumed,
        )
        return [str(dbsafe_decode(result)) for (result,) in rows]


def pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1]) if worker else 0


def peak_running(trials: list[dict[str, Any]]) -> int:
    events = sorted(
        [(t["datetime_start"], 1) for t in trials] + [(t["datetime_complete"], -1) for t in trials]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@contextmanager
def job_run(hub: Hub) -> Iterator[Run]:
    try:
        yield Run(hub)
    finally:
        for host in hub.workers:
            host.kill_all()
            host.reconnect()
        # A job left running by a failed test must not run in the next one.
        hub.sql("UPDATE studies_job SET status = 'cancelled' WHERE status IN ('queued', 'running')")
        hub.forget_queue()


@pytest.fixture
def run(hub) -> Iterator[Run]:
    with job_run(hub) as run:
        yield run


def assert_the_lost_trials_ran_again(trials: dict[int, dict[str, Any]], lost: list[int]) -> None:
    for number in lost:
        trial = trials[number]
        assert trial["state"] == FAIL and trial["system_attrs"]["hub_stale"] is True, trial
        reruns = [t for t in trials.values() if t["system_attrs"].get("hub_retry_of") == number]
        assert len(reruns) == 1, reruns
        assert reruns[0]["state"] == COMPLETE and reruns[0]["params"] == trial["params"]


def assert_exactly_n_trials(trials: dict[int, dict[str, Any]], lost: list[int]) -> None:
    assert sorted(trials) == list(range(len(trials)))  # each number once, no gap
    complete = [t for t in trials.values() if t["state"] == COMPLETE]
    assert len(complete) == N_TRIALS
    # Only the lost trials failed; nothing is left running.
    assert sorted(n for n, t in trials.items() if t["state"] != COMPLETE) == sorted(lost)
    assert peak_running(list(trials.values())) <= CONCURRENCY


def test_the_hosts_reach_the_services_only_over_their_own_links(hub):
    check = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
    for host in hub.network.hosts:
        routes = host.run(["ip", "-4", "route"]).stdout.strip().splitlines()
        link = ipaddress.ip_interface(f"{host.address}/30").network
        assert len(routes) == 1 and routes[0].startswith(f"{link} dev eth0"), routes
        # The services listen on this machine's loopback, which is not the host's...
        probe = host.run([PYTHON, "-c", check, "127.0.0.1", str(hub.postgres.port or 5432)])
        assert "ConnectionRefusedError" in probe.stderr
        # ...nor is any address beyond its link reachable, the other hosts' included.
        for other in hub.network.hosts:
            if other is not host:
                probe = host.run([PYTHON, "-c", check, other.address, str(WEB_PORT)])
                assert "Network is unreachable" in probe.stderr, probe.stderr
    # The hub's connections to its database all come from the hosts' processes.
    names = hub.sql(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = %s"
        " AND pid <> pg_backend_pid()",
        hub.database,
    )
    assert {name for (name,) in names} <= {host.namespace for host in hub.network.hosts}


def test_a_host_cut_off_and_killed_loses_no_trial(run):
    hub = run.hub
    w1, w2 = hub.workers
    run.start("cut-off")
    slots = run.leased_by(w1)
    lost = run.cut_off(w1, freeze=False)
    cut_at = run.now()
    w1.kill_all()
    assert lost, "host 1 had no trial running"

    run.wait(lambda: run.taken_over(w2, slots, lost), 60, "host 2 to take host 1's slots")
    before = run.trials()
    w1.reconnect()
    # The dead host's connections end once its link is back (what its kernel still had
    # to send, data or FIN, gets through).
    run.wait(lambda: not w1.connections(), 90, "host 1's connections to end")

    job = run.finished()
    assert job["status"] == "succeeded" and job["stop_reason"] == "n_trials", job
    trials = run.trials()
    assert_exactly_n_trials(trials, lost)
    assert_the_lost_trials_ran_again(trials, lost)
    for number, trial in before.items():
        if trial["datetime_complete"] is not None:
            assert trials[number] == trial  # a finished trial is never written again
    for trial in trials.values():
        if run.ran_on(trial, w1):
            assert trial["datetime_start"] < cut_at
    assert all(any(run.ran_on(t, host) for t in trials.values()) for host in (w1, w2))


@dataclass
class Comeback:
    """What a job looked like before and after a frozen host came back."""

    before: dict[int, dict[str, Any]]  # its trials when host 2 had taken over
    trials: dict[int, dict[str, Any]]  # and when the job ended
    job: dict[str, Any]
    lost: list[int]
    frozen_at: datetime
    came_back_trials: list[dict[str, Any]]  # those host 1 ran, at the end
    results: list[str]  # what host 1's stale tasks returned


@pytest.fixture(scope="module")
def came_back(hub) -> Comeback:
    """Host 1 freezes in mid-trial and comes back once host 2 has taken its slots over."""
    with job_run(hub) as run:
        w1, w2 = hub.workers
        run.start("frozen")
        slots = run.leased_by(w1)
        lost = run.cut_off(w1, freeze=True)
        frozen_at = run.now()
        assert lost, "host 1 had no trial running"

        run.wait(lambda: run.taken_over(w2, slots, lost), 60, "host 2 to take host 1's slots")
        before = run.trials()
        assert run.job_row()["status"] == "running"  # host 1 comes back to a running job
        w1.reconnect()
        resumed_at = run.now()
        w1.signal_all(signal.SIGCONT)

        # Its objective's sleep is over: each stale slot tells its trial, then ends its task.
        def stale_tasks_ended() -> list[str] | None:
            found = run.stale_tasks(slots, frozen_at, resumed_at)
            return found if len(found) == len(slots) else None

        results = run.wait(stale_tasks_ended, 60, "host 1's stale tasks to end")
        w1.kill_all()
        job = run.finished()
        trials = run.trials()
        on_1 = [trial for trial in trials.values() if run.ran_on(trial, w1)]
    return Comeback(before, trials, job, lost, frozen_at, on_1, results)


def test_a_frozen_host_that_comes_back_overwrites_no_trial(came_back):
    for number, trial in came_back.before.items():
        if trial["datetime_complete"] is not None:
            # Finished trials stay as they were, the lost ones (failed) included.
            assert came_back.trials[number] == trial, came_back.results
    for number in came_back.lost:
        assert came_back.trials[number]["state"] == FAIL
        assert came_back.trials[number]["values"] is None
    assert all(t["datetime_start"] < came_back.frozen_at for t in came_back.came_back_trials)
    assert sorted(came_back.trials) == list(range(len(came_back.trials)))


def test_a_frozen_host_that_comes_back_leaves_the_job_to_the_others(came_back):
    job = came_back.job
    assert job["status"] == "succeeded" and job["stop_reason"] == "n_trials", (
        job,
        came_back.results,
    )
    assert_exactly_n_trials(came_back.trials, came_back.lost)
    assert_the_lost_trials_ran_again(came_back.trials, came_back.lost)
