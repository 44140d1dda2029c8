"""Ask + tell over HTTP against a real gunicorn: throughput and latency.

    .venv/bin/python benchmarks/http_ask_tell.py [--trials 1000] [--workers N] [--threads 1]

For SQLite (a fresh file) and, when reachable, PostgreSQL (a scratch database
on HUB_TEST_POSTGRES_URL), starts gunicorn on the hub as `manage.py start` runs
it (one sync worker per CPU), creates one TPE study (float, int and categorical
parameters) over the API, then runs 1 and then 8 concurrent clients (threads,
one session each) that ask and tell until the study has N trials. Prints
trials/s and the p50 / p99 latency of the ask and tell requests as the clients
saw them, and the machine's load average (anything else running shares the
CPUs). ``--sampler random`` shows the API's own cost, without TPE's sampling,
which grows with the trials.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from scratch_db import (
    POSTGRES_URL,
    create_postgres_database,
    drop_postgres_database,
    postgres_reachable,
)

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SCRATCH = Path(tempfile.mkdtemp(prefix="hub-http-bench-"))
BENCH_DB = "hub_http_bench"
SPACE = {
    "x": {"type": "float", "low": -10, "high": 10},
    "n": {"type": "int", "low": 1, "high": 100},
    "kind": {"type": "categorical", "choices": ["a", "b", "c"]},
}


def objective(params: dict) -> float:
    return params["x"] ** 2 + params["n"] / 100 + {"a": 0.0, "b": 0.5, "c": 1.0}[params["kind"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "HUB_NO_BOOTSTRAP": "1", **extra}
    env["HUB_VAR_DIR"] = str(SCRATCH)
    env["DJANGO_SETTINGS_MODULE"] = "optuna_hub.settings"
    return env


def prepare(database_url: str) -> str:
    """Migrate the database and return an API token for a fresh user."""
    env = hub_env(database_url)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    script = (
        "from django.contrib.auth.models import User;"
        "from studies.models import ApiToken;"
        "u = User.objects.create_user('bench', password='bench-password');"
        "print(ApiToken.issue(u, 'bench')[1])"
    )
    out = subprocess.run(
        [*manage, "shell", "-c", script], cwd=BASE_DIR, env=env, check=True, capture_output=True
    )
    # The last line: `shell` may print a note about auto-imported models first.
    return out.stdout.decode().strip().splitlines()[-1]


def start_server(
    database_url: str, workers: int, threads: int, **env: str
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "optuna_hub.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            "--no-control-socket",
        ],
        cwd=BASE_DIR,
        env=hub_env(database_url, **env),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(
    base: str, token: str, name: str, sampler: str, clients: int, n_trials: int
) -> dict[str, float]:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    study = {"name": name, "sampler": {"type": sampler, "seed": 0}, "search_space": SPACE}
    response = session.post(f"{base}/api/studies/", json=study, timeout=30)
    response.raise_for_status()
    study_id = response.json()["id"]

    lock = threading.Lock()
    started = 0
    asks: list[float] = []
    tells: list[float] = []
    errors: list[str] = []

    def client() -> None:
        nonlocal started
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        while True:
            with lock:
                if started >= n_trials or errors:
                    return
                started += 1
            t0 = time.perf_counter()
            ask = session.post(f"{base}/api/studies/{study_id}/ask/", timeout=60)
            t1 = time.perf_counter()
            if ask.status_code != 201:
                errors.append(f"ask: {ask.status_code} {ask.text[:200]}")
                return
            trial = ask.json()
            value = objective(trial["params"])
            t2 = time.perf_counter()
            tell = session.post(
                f"{base}/api/trials/{trial['trial_id']}/tell/", json={"values": [value]}, timeout=60
            )
            t3 = time.perf_counter()
            if tell.status_code != 200:
                errors.append(f"tell: {tell.status_code} {tell.text[:200]}")
                return
            with lock:
                asks.append(t1 - t0)
                tells.append(t3 - t2)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(errors[0])
    counts = session.get(f"{base}/api/studies/{study_id}/", timeout=30).json()["trial_counts"]
    assert counts["COMPLETE"] == n_trials, counts

    def quantile(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000

    both = asks + tells
    return {
        "trials/s": n_trials / elapsed,
        "ask p50": quantile(asks, 50),
        "ask p99": quantile(asks, 99),
        "tell p50": quantile(tells, 50),
        "tell p99": quantile(tells, 99),
        "any p99": quantile(both, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="gunicorn workers (default: 1 per CPU)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per worker (1: gunicorn's sync worker)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--sampler", default="tpe", help="tpe (the target), or random to see the API's own cost"
    )
    args = parser.parse_args()

    databases = {"SQLite": f"sqlite:///{SCRATCH / 'hub.sqlite3'}"}
    if postgres_reachable():
        databases["PostgreSQL"] = "postgres"
    else:
        print(f"PostgreSQL not reachable at {POSTGRES_URL}: skipped")
    print(
        f"{args.trials} trials per run, one {args.sampler} study (float, int, categorical), "
        f"gunicorn {args.workers} workers x {args.threads} threads, {os.cpu_count()} CPUs"
    )
    print(
        f"{'database':<11} {'clients':>7} {'trials/s':>9} {'ask p50':>8} {'ask p99':>8} "
        f"{'tell p50':>9} {'tell p99':>9} {'p99 any':>8}   (latencies in ms)"
    )
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for label, url in databases.items():
        if url == "postgres":
            url = create_postgres_database(BENCH_DB)
        try:
            token = prepare(url)
            process, base = start_server(url, args.workers, args.threads)
            try:
                for clients in args.clients:
                    name = f"bench-{args.sampler}-{clients}"
                    r = run(base, token, name, args.sampler, clients, args.trials)
                    print(
                        f"{label:<11} {clients:>7} {r['trials/s']:>9.1f} {r['ask p50']:>8.1f} "
                        f"{r['ask p99']:>8.1f} {r['tell p50']:>9.1f} {r['tell p99']:>9.1f} "
                        f"{r['any p99']:>8.1f}",
                        flush=True,
                    )
            finally:
                stop_server(process)
        finally:
            if label == "PostgreSQL":
                drop_postgres_database(BENCH_DB)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
