"""Plain Optuna on a remote storage: HubStorage against Optuna's gRPC proxy and in-memory.

    .venv/bin/python benchmarks/remote_storage.py [--trials 1000] [--workers 2] [--threads 1]

In this one process, one after another, runs ``study.optimize`` for N trials of
a trivial objective (a float, an int and a categorical parameter) with TPE
(seeded) and with random sampling, on:

- ``InMemoryStorage``, in process (the floor);
- Optuna's ``GrpcStorageProxy`` over DjangoStorage: ``run_grpc_proxy_server``
  in its own process on a fresh SQLite file (the peer: no token, no TLS, no
  rights);
- ``HubStorage`` over the hub's gunicorn on the same file, as ``manage.py
  start`` runs it (sync workers, one per CPU up to 4) unless told otherwise.

Prints ms per trial and the ratios the issue sets targets for: HubStorage no
slower than the gRPC proxy, and within 3x of InMemoryStorage for TPE.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import optuna
from http_ask_tell import (
    BASE_DIR,
    SCRATCH,
    free_port,
    hub_env,
    prepare,
    start_server,
    stop_server,
)
from optuna.storages import GrpcStorageProxy, InMemoryStorage
from optuna_hub_client import HubStorage

PROXY = """
import django
django.setup()
import optuna
from studies.storage import DjangoStorage
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.storages.run_grpc_proxy_server(DjangoStorage(), host="127.0.0.1", port={port})
"""


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 100)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return x**2 + n / 100 + {"a": 0.0, "b": 0.5, "c": 1.0}[kind]


def sampler(kind: str) -> optuna.samplers.BaseSampler:
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=0)
    return optuna.samplers.RandomSampler(seed=0)


def ms_per_trial(storage: optuna.storages.BaseStorage, kind: str, n_trials: int) -> float:
    study = optuna.create_study(storage=storage, sampler=sampler(kind))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    elapsed = time.perf_counter() - start
    assert len(study.trials) == n_trials
    return elapsed / n_trials * 1000


def start_proxy(database_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", PROXY.format(port=port)],
        cwd=BASE_DIR,
        env=hub_env(database_url),
    )
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 2, 4))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database_url = f"sqlite:///{SCRATCH / 'hub.sqlite3'}"
    token = prepare(database_url)
    proxy, port = start_proxy(database_url)
    server, base = start_server(database_url, args.workers, args.threads)
    try:
        grpc = GrpcStorageProxy(host="127.0.0.1", port=port)
        grpc.wait_server_ready(timeout=60)
        storages = {
            "InMemoryStorage": InMemoryStorage,
            "GrpcStorageProxy over DjangoStorage": lambda: grpc,
            "HubStorage over gunicorn": lambda: HubStorage(base, token),
        }
        results: dict[tuple[str, str], float] = {}
        server_kind = f"gunicorn {args.workers} workers x {args.threads} threads"
        print(f"{args.trials} trials each; {server_kind}")
        for kind in ("tpe", "random"):
            for name, make in storages.items():
                results[name, kind] = ms_per_trial(make(), kind, args.trials)
                print(f"{kind:6} {name:36} {results[name, kind]:7.2f} ms/trial", flush=True)
        for kind in ("tpe", "random"):
            hub = results["HubStorage over gunicorn", kind]
            print(
                f"{kind:6} HubStorage / gRPC proxy: "
                f"{hub / results['GrpcStorageProxy over DjangoStorage', kind]:.2f}x;"
                f" HubStorage / InMemoryStorage: {hub / results['InMemoryStorage', kind]:.2f}x"
            )
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        stop_server(server)
        proxy.terminate()
        proxy.wait(15)


if __name__ == "__main__":
    main()
