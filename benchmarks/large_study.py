"""A large study as the hub serves it over HTTP, cold and warm, beside optuna-dashboard.

    .venv/bin/python benchmarks/large_study.py 10000
    .venv/bin/python benchmarks/large_study.py 100000 --dashboard-python /path/to/bin/python
    .venv/bin/python benchmarks/large_study.py 100000 --no-peer   # the hub alone, faster
    .venv/bin/python benchmarks/large_study.py 100000 --peer-repeats 1   # the peer's slow
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/<scratch> \\
        .venv/bin/python benchmarks/large_study.py 10000

Builds one study of N synthetic trials (``pages.make_study``: bulk_create) in a
fresh SQLite file under /tmp/large_bench/, or in the database DATABASE_URL names
(the benchmark's study and user are deleted from it afterwards), then runs the
hub under gunicorn as ``manage.py start`` does (one sync worker per CPU, at most
4) and times real HTTP requests on the loopback, signed in through the login
page (pages) or with an API token (the API): the studies list, the study page,
its status JSON, the trials table (by number, value and duration), every chart
of the study, the CSV and JSON exports.

Each request gets a freshly started server. "cold" is its first request, which
one worker serves with empty caches; "other" is the first time a second worker
serves it (gunicorn's workers cache separately, so a visitor can pay the cold
cost once per worker); "warm" is the median of 5 requests served by a worker
that had served it before. Which worker served a request is read from the
workers' CPU time (/proc/<pid>/schedstat). A worker's first request of any kind
also imports the views: the "login page" row shows that part alone.

The peer, optuna-dashboard, serves the same trials (copied into an Optuna
RDBStorage SQLite file) from its own venv, as ``optuna-dashboard sqlite:///...``
runs it; its figures stand beside the hub's request they match: its study list,
the study detail the UI loads first (``/api/studies/<id>?after=0``: every
trial, from which the UI draws its charts), the detail it polls once it holds
every finished trial (``?after=<n>``), its importances and its CSV. Install it
with

    python3 -m venv /tmp/large_bench/dashboard-venv
    /tmp/large_bench/dashboard-venv/bin/pip install optuna==5.0.0 optuna-dashboard==0.21.0

Then, in new processes: ``load_study`` + ``best_trial`` + ``len(study.trials)``
on a fresh DjangoStorage (and on the peer's RDBStorage), and a first ask + tell
with TPE; and the RSS of each gunicorn worker once every worker has served every
chart. Other processes on the machine share its CPUs: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

BENCH_DIR = Path("/tmp/large_bench")
BENCH_DIR.mkdir(exist_ok=True)
# http_ask_tell makes its SCRATCH directory when imported: keep it under BENCH_DIR.
tempfile.tempdir = str(BENCH_DIR)

import requests  # noqa: E402
from http_ask_tell import SCRATCH, free_port, hub_env, start_server, stop_server  # noqa: E402
from pages import SEARCH_SPACE, make_study, setup_django  # noqa: E402

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from studies.models import Study

BASE_DIR = Path(__file__).resolve().parent.parent
DASHBOARD_PYTHON = BENCH_DIR / "dashboard-venv" / "bin" / "python"
INSTALL_DASHBOARD = (
    f"python3 -m venv {DASHBOARD_PYTHON.parent.parent} && "
    f"{DASHBOARD_PYTHON.parent / 'pip'} install optuna==5.0.0 optuna-dashboard==0.21.0"
)
WORKERS = min(os.cpu_count() or 2, 4)  # as `manage.py start`
GUNICORN_ARGS = "--timeout 300"  # as `manage.py start`: a cold chart of 100k trials is slow
WARM_REPEATS = 5
MAX_TRIES = 10  # to have a second worker serve a request
PASSWORD = "large-bench-password"

# Runs in a new process, on the hub's DjangoStorage ("django") or on the peer's
# RDBStorage (its URL); prints its timings (ms) and what it read, as JSON.
STORAGE_SCRIPT = """
import json, sys, time
began = time.perf_counter()
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
task, name, url, space = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if url == "django":
    import django
    django.setup()
    from studies.storage import DjangoStorage
    storage = DjangoStorage()
else:
    storage = optuna.storages.RDBStorage(url)
ms = {"setup": (time.perf_counter() - began) * 1000}

def timed(label, call):
    start = time.perf_counter()
    result = call()
    ms[label] = (time.perf_counter() - start) * 1000
    return result

sampler = optuna.samplers.TPESampler()
study = timed(
    "load_study", lambda: optuna.load_study(study_name=name, storage=storage, sampler=sampler)
)
out = {"ms": ms}
if task == "read":
    for again in ("", " again"):
        best = timed("best_trial" + again, lambda: study.best_trial)
        out["n_trials"] = timed("len(study.trials)" + again, lambda: len(study.trials))
    out["best"] = [best.number, best.value]
else:
    dists = {n: optuna.distributions.json_to_distribution(d) for n, d in space.items()}
    for again in ("", " again"):
        trial = timed("ask" + again, lambda: study.ask(dists))
        timed("tell" + again, lambda: study.tell(trial, 1.0))
print(json.dumps(out))
"""


# Servers


@dataclass
class Server:
    base: str
    pids: list[int]  # the processes that serve requests: gunicorn's workers, or the peer


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # ppid is the second field after the ")" that ends the command name
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


def cpu_ns(pids: list[int]) -> dict[int, int]:
    """Each process's time on a CPU so far, in nanoseconds."""
    return {pid: int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def wait_until_idle(pids: list[int], timeout: float = 60) -> None:
    """Until the processes have booted: under 2 ms of CPU between two looks 0.5 s apart."""
    deadline = time.monotonic() + timeout
    before = cpu_ns(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = cpu_ns(pids)
        if sum(after.values()) - sum(before.values()) < 2_000_000:
            return
        before = after
    raise RuntimeError(f"processes {pids} still busy after {timeout} s")


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited (code {process.returncode})")
        try:  # a connection, not a request: the server has served nothing yet
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def hub_server(database_url: str) -> Iterator[Server]:
    """gunicorn on the hub, as `manage.py start` runs it, its workers booted and idle."""
    process, base = start_server(database_url, WORKERS, 1, GUNICORN_CMD_ARGS=GUNICORN_ARGS)
    try:
        deadline = time.monotonic() + 30
        while len(pids := children(process.pid)) < WORKERS:
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start its workers")
            time.sleep(0.1)
        wait_until_idle(pids)
        yield Server(base, pids)
    finally:
        stop_server(process)


@contextmanager
def peer_server(python: str, storage_url: str) -> Iterator[Server]:
    """optuna-dashboard as its command runs it (`optuna-dashboard sqlite:///...`)."""
    port = free_port()
    with open(SCRATCH / "dashboard.log", "ab") as log:
        process = subprocess.Popen(
            # The module the `optuna-dashboard` command runs, with this venv's Python.
            [python, "-m", "optuna_dashboard._cli", storage_url]
            + ["--host", "127.0.0.1", "--port", str(port), "--quiet"],
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_port(port, process)
        wait_until_idle([process.pid])
        yield Server(f"http://127.0.0.1:{port}", [process.pid])
    finally:
        stop_server(process)


# Timing requests


@dataclass
class Timing:
    cold: float  # ms: the first request after the server started
    other: float | None  # ms: a second worker's first request for it
    warm: float | None  # ms: median of (WARM_REPEATS) requests to a worker that had served it
    size: int | None  # bytes of the body


def timed_get(session: requests.Session, server: Server, path: str) -> tuple[float, int, int]:
    """(ms until the whole body arrived, its size, the pid that served it)."""
    before = cpu_ns(server.pids)
    began = time.perf_counter()
    response = session.get(server.base + path, allow_redirects=False, timeout=600)
    elapsed = (time.perf_counter() - began) * 1000
    after = cpu_ns(server.pids)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
    # One request at a time: the process that used the CPU meanwhile served it
    # (idle workers only wake briefly to look at the socket).
    worker = max(server.pids, key=lambda pid: after[pid] - before[pid])
    return elapsed, len(response.content), worker


@contextmanager
def parked_worker(server: Server) -> Iterator[None]:
    """One idle worker busy meanwhile: it accepted a connection that sends nothing yet.

    A sync worker serves one connection at a time, so the next request goes to
    another worker. Which one parks is gunicorn's choice.
    """
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        time.sleep(0.05)  # for a worker to accept it
        yield


def measure(
    session: requests.Session, server: Server, path: str, repeats: int = WARM_REPEATS
) -> Timing:
    """Cold, a second worker's cold, and warm, on a server that has served nothing yet."""
    cold, size, worker = timed_get(session, server, path)
    served = {worker}
    other = None
    warm: list[float] = []
    for _ in range(MAX_TRIES if len(server.pids) > 1 else 0):
        with parked_worker(server):
            ms, size, worker = timed_get(session, server, path)
        if worker not in served:
            other = ms
            served.add(worker)
            break
        warm.append(ms)  # the worker that served it first took it again
    while len(warm) < repeats:
        ms, size, worker = timed_get(session, server, path)
        if worker in served:
            warm.append(ms)
        served.add(worker)  # a third worker's first request is cold too: not counted
    return Timing(cold, other, statistics.median(warm), size)


def serve_on_every_worker(session: requests.Session, server: Server, path: str) -> None:
    served = {timed_get(session, server, path)[2]}
    for _ in range(MAX_TRIES * len(server.pids)):
        if served == set(server.pids):
            return
        with parked_worker(server):
            served.add(timed_get(session, server, path)[2])
    raise RuntimeError(f"{path}: served by workers {served} only, of {server.pids}")


def log_in(session: requests.Session, server: Server, username: str) -> None:
    """Sign in through the login page, as a browser does: the session cookie."""
    url = f"{server.base}/accounts/login/"
    page = session.get(url, timeout=60).text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if csrf is None:
        raise RuntimeError("the login page has no CSRF token")
    form = {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf.group(1)}
    response = session.post(url, data=form, allow_redirects=False, timeout=60)
    if response.status_code != 302:
        raise RuntimeError(f"login failed: HTTP {response.status_code}")


# What is measured


@dataclass
class Request:
    label: str
    path: str
    client: str  # "browser" (session cookie) or "api" (token)
    peer: str | None = None  # the peer's matching request, if it has one


def study_requests(study: Study, peer_id: int, n_trials: int) -> list[Request]:
    from django.urls import reverse

    from studies.charts import charts_for

    pk = study.pk
    rows = [
        Request("studies list /", reverse("studies:study_list"), "browser"),
        Request("GET /api/studies/", reverse("api-study-list"), "api", "/api/studies"),
        Request(
            "study page",
            reverse("studies:study", args=[pk]),
            "browser",
            f"/api/studies/{peer_id}?after=0",
        ),
        # The peer's plain /api/studies/<id> is its ?after=0 (after defaults to 0).
        Request("GET /api/studies/<id>/", reverse("api-study-detail", args=[pk]), "api"),
        Request(
            "status JSON",
            reverse("studies:study_status", args=[pk]),
            "browser",
            f"/api/studies/{peer_id}?after={n_trials}",
        ),
    ]
    table = reverse("studies:study_trials", args=[pk])
    rows += [
        Request("trials table", table, "browser"),
        Request("trials table ?sort=value", f"{table}?sort=value", "browser"),
        Request("trials table ?sort=duration", f"{table}?sort=duration", "browser"),
    ]
    for name, _title in charts_for(study):
        peer = f"/api/studies/{peer_id}/param_importances" if name == "importances" else None
        rows.append(
            Request(f"chart {name}", reverse("studies:chart", args=[pk, name]), "browser", peer)
        )
    rows += [
        Request(
            "trials CSV export",
            reverse("api-study-trials-csv", args=[pk]),
            "api",
            f"/csv/{peer_id}",
        ),
        Request("trials JSON export", reverse("api-study-trials-json", args=[pk]), "api"),
    ]
    return rows


# The peer's copy of the study


def write_peer_storage(study_name: str, path: Path) -> int:
    """The hub study's trials, as DjangoStorage reads them, into an RDBStorage SQLite file.

    optuna.copy_study writes one trial per transaction (minutes at 100k): the
    rows go in with one bulk insert per table of Optuna's own RDB models instead.
    Returns the study's id there.
    """
    import optuna
    import sqlalchemy as sa

    from studies.storage import DjangoStorage

    hub = DjangoStorage()
    hub_id = hub.get_study_id_from_name(study_name)
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.create_new_study(hub.get_study_directions(hub_id), study_name)
    tables = rdb_rows(hub.get_all_trials(hub_id, deepcopy=False), study_id)
    with storage.engine.begin() as connection:
        for model, rows in tables.items():
            if rows:
                connection.execute(sa.insert(model.__table__), rows)
    storage.engine.dispose()
    return study_id


def rdb_rows(trials: list[FrozenTrial], study_id: int) -> dict[type, list[dict]]:
    """RDBStorage's rows of ``trials``: the trial, its params, values, reports, user attrs."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    tables: dict[type, list[dict]] = {
        models.TrialModel: [],
        models.TrialParamModel: [],
        models.TrialValueModel: [],
        models.TrialIntermediateValueModel: [],
        models.TrialUserAttributeModel: [],
    }
    for trial_id, trial in enumerate(trials, start=1):
        tables[models.TrialModel].append(
            {
                "trial_id": trial_id,
                "number": trial.number,
                "study_id": study_id,
                "state": trial.state,
                # RDBStorage keeps naive UTC
                "datetime_start": naive_utc(trial.datetime_start),
                "datetime_complete": naive_utc(trial.datetime_complete),
            }
        )
        for name, dist in trial.distributions.items():
            tables[models.TrialParamModel].append(
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": dist.to_internal_repr(trial.params[name]),
                    "distribution_json": distribution_to_json(dist),
                }
            )
        for objective, value in enumerate(trial.values or []):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            tables[models.TrialValueModel].append(
                {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
            )
        for step, value in trial.intermediate_values.items():
            model = models.TrialIntermediateValueModel
            stored, kind = model.intermediate_value_to_stored_repr(value)
            tables[model].append(
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        for key, value in trial.user_attrs.items():
            tables[models.TrialUserAttributeModel].append(
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
            )
    return tables


def naive_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def peer_versions(python: str) -> str | None:
    """ "optuna X, optuna-dashboard Y" of the peer's Python, or None if it has no dashboard."""
    script = (
        "import optuna, optuna_dashboard; print(optuna.__version__, optuna_dashboard.__version__)"
    )
    try:
        out = subprocess.run([python, "-c", script], capture_output=True, check=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    optuna_version, dashboard_version = out.stdout.split()
    return f"optuna-dashboard {dashboard_version} (optuna {optuna_version}), wsgiref server"


# Storage in a new process


def storage_in_new_process(python: str, task: str, name: str, url: str, env: dict) -> dict:
    """STORAGE_SCRIPT's answer, with "process" added: the whole process, as the parent saw it."""
    from optuna.distributions import distribution_to_json

    from studies.config.search_space import to_distribution

    space = {  # the unconditional parameters
        n: distribution_to_json(to_distribution(s))
        for n, s in SEARCH_SPACE.items()
        if "when" not in s
    }
    argv = [python, "-c", STORAGE_SCRIPT, task, name, url, json.dumps(space)]
    began = time.perf_counter()
    out = subprocess.run(argv, cwd=BASE_DIR, env=env, capture_output=True, text=True)
    elapsed = (time.perf_counter() - began) * 1000
    if out.returncode != 0:
        raise RuntimeError(f"{task} on {url}: {out.stderr[-2000:]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    answer["ms"]["process"] = elapsed
    return answer


# Output


COLUMNS = (
    f"{'request':<34} {'cold ms':>9} {'other ms':>9} {'warm ms':>9} {'size':>9}"
    f"   {'peer cold':>9} {'peer warm':>9} {'peer size':>9}  peer request"
)


def ms_text(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def size_text(size: int | None) -> str:
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} kB"
    return f"{size / 1024 / 1024:.1f} MB"


def print_row(label: str, hub: Timing, peer: Timing | None = None, peer_path: str = "") -> None:
    line = (
        f"{label:<34} {ms_text(hub.cold):>9} {ms_text(hub.other):>9} {ms_text(hub.warm):>9}"
        f" {size_text(hub.size):>9}"
    )
    if peer is not None:
        line += (
            f"   {ms_text(peer.cold):>9} {ms_text(peer.warm):>9} {size_text(peer.size):>9}"
            f"  {peer_path}"
        )
    print(line.rstrip(), flush=True)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# The run


def run(
    n_trials: int,
    dashboard_python: str | None,
    peer_label: str,
    scratch_db: bool,
    peer_repeats: int = WARM_REPEATS,
) -> None:
    import optuna
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session
    from django.db import connections

    from studies.models import ApiToken

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_began = time.perf_counter()
    database_url = os.environ["DATABASE_URL"]
    username = f"large-bench-{time.time_ns()}"
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    browser, api = requests.Session(), requests.Session()
    api.headers["Authorization"] = f"Token {ApiToken.issue(user, 'large_study benchmark')[1]}"
    study = None
    try:
        began = time.perf_counter()
        study = make_study(f"{username}-study", n_trials, owner=user)
        built = time.perf_counter() - began
        peer_url = f"sqlite:///{SCRATCH / 'dashboard.sqlite3'}"
        peer_id = 0
        if dashboard_python:
            began = time.perf_counter()
            peer_id = write_peer_storage(study.name, SCRATCH / "dashboard.sqlite3")
            peer_label += f", its SQLite copy written in {time.perf_counter() - began:.1f} s"
        print_header(n_trials, built, peer_label if dashboard_python else "")
        connections.close_all()  # the servers alone use the database from here on

        with hub_server(database_url) as server:
            login = measure(requests.Session(), server, "/accounts/login/")
            log_in(browser, server, username)
        print_row("login page (first: imports)", login)
        measured = study_requests(study, peer_id, n_trials)
        clients = {"browser": browser, "api": api}
        results = measure_requests(
            measured, clients, database_url, dashboard_python, peer_url, peer_repeats
        )

        print_storage_rows(study.name, database_url, dashboard_python, peer_url)
        print_exports(results, n_trials)
        print_ratio(measured, results)
        print_memory(study, database_url, browser, dashboard_python, peer_url, peer_id)
        print(f"load average after: {load_average()}")
        print(f"ran in {time.perf_counter() - run_began:.0f} s")
    finally:
        if not scratch_db:  # someone's database: leave it as it was
            if study is not None:
                study.delete()
            Session.objects.filter(session_key=browser.cookies.get("sessionid", "")).delete()
            user.delete()
        connections.close_all()


def print_header(n_trials: int, built: float, peer_label: str) -> None:
    import optuna
    from django.conf import settings
    from django.db import connection

    database = f"{connection.vendor} ({settings.DATABASES['default']['NAME']})"
    print(
        f"{n_trials} trials (built in {built:.1f} s), database {database}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, optuna {optuna.__version__}, "
        f"gunicorn {WORKERS} sync workers"
    )
    if peer_label:
        print(f"peer: {peer_label}")
    print(f"load average before: {load_average()}")
    print(COLUMNS)


def measure_requests(
    measured: list[Request],
    clients: dict[str, requests.Session],
    database_url: str,
    dashboard_python: str | None,
    peer_url: str,
    peer_repeats: int,
) -> dict[str, tuple[Timing, Timing | None]]:
    """Each request on a fresh hub, then its match on a fresh peer; a row each as it goes."""
    results: dict[str, tuple[Timing, Timing | None]] = {}
    for request in measured:
        with hub_server(database_url) as server:
            hub = measure(clients[request.client], server, request.path)
        peer = None
        if dashboard_python and request.peer:
            with peer_server(dashboard_python, peer_url) as server:
                peer = measure(requests.Session(), server, request.peer, peer_repeats)
        results[request.label] = (hub, peer)
        print_row(request.label, hub, peer, request.peer or "")
    return results


def print_storage_rows(
    name: str, database_url: str, dashboard_python: str | None, peer_url: str
) -> None:
    print("in a new process (a fresh DjangoStorage; peer: RDBStorage on its SQLite file):")
    env, peer_env = hub_env(database_url), dict(os.environ)
    hub_read = storage_in_new_process(sys.executable, "read", name, "django", env)
    peer_read = None
    if dashboard_python:
        peer_read = storage_in_new_process(dashboard_python, "read", name, peer_url, peer_env)
        if (peer_read["n_trials"], peer_read["best"]) != (hub_read["n_trials"], hub_read["best"]):
            print(f"  the peer's copy differs: {peer_read} vs {hub_read}")
    hub_ask = storage_in_new_process(sys.executable, "ask_tell", name, "django", env)
    peer_ask = None
    if dashboard_python:
        peer_ask = storage_in_new_process(dashboard_python, "ask_tell", name, peer_url, peer_env)

    def row(label: str, hub: dict, peer: dict | None, key: str, again: bool = False) -> None:
        def timing(answer: dict) -> Timing:
            warm = answer["ms"].get(f"{key} again") if again else None
            return Timing(answer["ms"][key], None, warm, None)

        print_row(label, timing(hub), timing(peer) if peer else None)

    row("  import + setup (django / RDB)", hub_read, peer_read, "setup")
    row("  load_study", hub_read, peer_read, "load_study")
    row("  best_trial (warm: again)", hub_read, peer_read, "best_trial", again=True)
    row("  len(study.trials) (warm: again)", hub_read, peer_read, "len(study.trials)", True)
    row("  the whole process", hub_read, peer_read, "process")
    row("  first ask, TPE (warm: 2nd)", hub_ask, peer_ask, "ask", again=True)
    row("  first tell (warm: 2nd)", hub_ask, peer_ask, "tell", again=True)
    row("  the whole ask + tell process", hub_ask, peer_ask, "process")


def print_exports(results: dict[str, tuple[Timing, Timing | None]], n_trials: int) -> None:
    for label in ("trials CSV export", "trials JSON export"):
        hub, peer = results[label]
        line = (
            f"{label}: {n_trials} rows, {size_text(hub.size)}, "
            f"cold {n_trials / hub.cold * 1000:,.0f} rows/s, warm {n_trials / hub.warm * 1000:,.0f}"
        )
        if peer is not None:
            line += (
                f" (peer: {size_text(peer.size)}, cold {n_trials / peer.cold * 1000:,.0f} rows/s, "
                f"warm {n_trials / peer.warm * 1000:,.0f})"
            )
        print(line)


def print_ratio(measured: list[Request], results: dict[str, tuple[Timing, Timing | None]]) -> None:
    request = next(r for r in measured if r.label == "study page")
    hub, peer = results[request.label]
    if peer is not None:
        print(
            f"study detail, peer cold / hub cold: {peer.cold / hub.cold:.1f} "
            f"(peer {request.peer} {ms_text(peer.cold)} ms, hub study page "
            f"{ms_text(hub.cold)} ms); warm: {peer.warm / hub.warm:.1f}"
        )


def print_memory(
    study: Study,
    database_url: str,
    browser: requests.Session,
    dashboard_python: str | None,
    peer_url: str,
    peer_id: int,
) -> None:
    from django.urls import reverse

    from studies.charts import charts_for

    with hub_server(database_url) as server:
        idle = [rss_mb(pid) for pid in server.pids]
        for name, _title in charts_for(study):
            serve_on_every_worker(browser, server, reverse("studies:chart", args=[study.pk, name]))
        served = [rss_mb(pid) for pid in server.pids]
    print(
        f"gunicorn worker RSS: {' / '.join(f'{mb:.0f}' for mb in served)} MB after every chart "
        f"on every worker (idle: {' / '.join(f'{mb:.0f}' for mb in idle)} MB)"
    )
    if dashboard_python:
        session = requests.Session()
        with peer_server(dashboard_python, peer_url) as server:
            idle_peer = rss_mb(server.pids[0])
            for path in (
                f"/api/studies/{peer_id}?after=0",
                f"/api/studies/{peer_id}/param_importances",
            ):
                timed_get(session, server, path)
            served_peer = rss_mb(server.pids[0])
        print(
            f"peer RSS: {served_peer:.0f} MB after the study detail and importances "
            f"(idle: {idle_peer:.0f} MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=int, help="trials in the study (e.g. 10000, 100000)")
    parser.add_argument(
        "--dashboard-python",
        default=str(DASHBOARD_PYTHON) if DASHBOARD_PYTHON.exists() else None,
        help=f"a Python with optuna-dashboard installed (default: {DASHBOARD_PYTHON})",
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="the hub alone (the peer's figures take longest)"
    )
    parser.add_argument(
        "--peer-repeats",
        type=int,
        default=WARM_REPEATS,
        help="warm requests per peer figure (its 100k-trial detail call takes over a minute)",
    )
    args = parser.parse_args()
    dashboard_python, peer_label = args.dashboard_python, ""
    if args.no_peer:
        dashboard_python = None
    elif dashboard_python:
        peer_label = peer_versions(dashboard_python) or ""
        if not peer_label:
            dashboard_python = None
    if not dashboard_python and not args.no_peer:
        print(f"optuna-dashboard not found: the peer is skipped. Install it: {INSTALL_DASHBOARD}")
    scratch_db = "DATABASE_URL" not in os.environ  # then removed with SCRATCH
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{SCRATCH / 'hub.sqlite3'}")
    os.environ["HUB_VAR_DIR"] = str(SCRATCH)  # the secret key, as the servers see it
    try:
        setup_django()
        run(args.trials, dashboard_python, peer_label, scratch_db, args.peer_repeats)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
