"""Single requests against a real gunicorn: what one request costs, by kind.

    .venv/bin/python benchmarks/http_requests.py [--requests 300]

One client, one request at a time (so the figures are the cost of a request,
not queueing), against the hub on a fresh SQLite file: a token-authenticated
404, a study's detail, and an ask + tell pair on a random-sampler study (TPE's
sampling would hide the rest). The same requests run against two servers side
by side: Django opening a database connection per request (HUB_CONN_MAX_AGE=0,
Django's default) and keeping it (the hub's default). Prints the median and p90
wall time per request as the client saw it, and the client's own CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import requests
from http_ask_tell import SCRATCH, SPACE, prepare, start_server, stop_server

SERVERS = {"connection per request": {"HUB_CONN_MAX_AGE": "0"}, "connections kept": {}}


def measure(call: Callable[[], object], n: int) -> tuple[float, float, float]:
    for _ in range(20):  # warm up: imports, caches, the first connection
        call()
    cpu = time.process_time()
    walls = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu) / n
    deciles = statistics.quantiles(walls, n=10)
    return statistics.median(walls) * 1000, deciles[8] * 1000, cpu * 1000


def requests_of(base: str, token: str, name: str) -> dict[str, Callable[[], object]]:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    study = {"name": name, "sampler": {"type": "random", "seed": 0}, "search_space": SPACE}
    response = session.post(f"{base}/api/studies/", json=study, timeout=30)
    response.raise_for_status()
    study_id = response.json()["id"]

    def ok(response: requests.Response, status: int) -> requests.Response:
        assert response.status_code == status, response.text[:200]
        return response

    def ask_and_tell() -> None:
        trial = ok(session.post(f"{base}/api/studies/{study_id}/ask/", timeout=30), 201).json()
        tell = session.post(
            f"{base}/api/trials/{trial['trial_id']}/tell/", json={"values": [1.0]}, timeout=30
        )
        ok(tell, 200)

    return {
        "404 (token auth)": lambda: ok(session.get(f"{base}/api/no-such-thing/"), 404),
        "study detail": lambda: ok(session.get(f"{base}/api/studies/{study_id}/"), 200),
        "ask + tell (random)": ask_and_tell,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    url = f"sqlite:///{SCRATCH / 'hub.sqlite3'}"
    token = prepare(url)
    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    for label, env in SERVERS.items():
        process, base = start_server(url, 1, 1, LOG_LEVEL="ERROR", **env)
        try:
            calls = requests_of(base, token, f"requests-{len(results)}")
            results[label] = {kind: measure(call, args.requests) for kind, call in calls.items()}
        finally:
            stop_server(process)
    print(f"{args.requests} requests of each kind, 1 client, gunicorn 1 sync worker, SQLite")
    print(f"{'request':<22} {'server':<24} {'p50 ms':>7} {'p90 ms':>7} {'client CPU ms':>14}")
    for kind in next(iter(results.values())):
        for label, by_kind in results.items():
            p50, p90, cpu = by_kind[kind]
            print(f"{kind:<22} {label:<24} {p50:>7.2f} {p90:>7.2f} {cpu:>14.2f}")


if __name__ == "__main__":
    main()
