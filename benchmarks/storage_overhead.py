"""Storage overhead: the same optimization on Optuna's storages and on DjangoStorage.

    .venv/bin/python benchmarks/storage_overhead.py [--trials 1000]

Runs, in this one process, N TPE trials and N random-sampler trials (3 params:
float, int, categorical; trivial objective) on InMemoryStorage, JournalStorage
(file), Optuna's RDBStorage on SQLite, DjangoStorage on SQLite and, when
reachable (HUB_TEST_POSTGRES_URL), Optuna's RDBStorage and DjangoStorage on the
same PostgreSQL, the latter also with HUB_PG_SYNCHRONOUS_COMMIT=off, and prints
ms/trial and the ratio to InMemoryStorage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SCRATCH = Path(tempfile.mkdtemp(prefix="hub-bench-"))
os.environ["DATABASE_URL"] = f"sqlite:///{SCRATCH / 'django.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")
BENCH_DB = "hub_storage_bench"
RDB_DB = "hub_storage_bench_rdb"

import django  # noqa: E402
import optuna  # noqa: E402
from django.conf import settings  # noqa: E402
from scratch_db import (  # noqa: E402
    POSTGRES_URL,
    create_postgres_database,
    drop_postgres_database,
    postgres_reachable,
)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 100)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return x**2 + n / 100 + {"a": 0.0, "b": 0.5, "c": 1.0}[kind]


def run(storage: object, sampler: optuna.samplers.BaseSampler, n_trials: int) -> float:
    study = optuna.create_study(storage=storage, sampler=sampler)
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    elapsed = time.perf_counter() - start
    assert len(study.trials) == n_trials
    return elapsed * 1000 / n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    args = parser.parse_args()

    use_postgres = postgres_reachable()
    if use_postgres:
        from optuna_hub.settings import database_from_url

        url = create_postgres_database(BENCH_DB)
        settings.DATABASES["postgres"] = database_from_url(url)
        os.environ["HUB_PG_SYNCHRONOUS_COMMIT"] = "off"
        settings.DATABASES["postgres_async"] = database_from_url(url)
        del os.environ["HUB_PG_SYNCHRONOUS_COMMIT"]
        rdb_url = create_postgres_database(RDB_DB).replace("postgresql://", "postgresql+psycopg://")
    django.setup()
    from django.core.management import call_command

    from studies.storage import DjangoStorage

    call_command("migrate", verbosity=0)
    if use_postgres:
        call_command("migrate", database="postgres", verbosity=0)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    counter = iter(range(1000))

    def journal() -> object:
        path = str(SCRATCH / f"journal-{next(counter)}.log")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))

    def rdb() -> object:
        return optuna.storages.RDBStorage(f"sqlite:///{SCRATCH / f'rdb-{next(counter)}.db'}")

    storages: dict[str, Callable[[], object]] = {
        "InMemoryStorage": optuna.storages.InMemoryStorage,
        "JournalStorage (file)": journal,
        "RDBStorage (SQLite)": rdb,
        "DjangoStorage (SQLite)": DjangoStorage,
    }
    if use_postgres:
        storages["RDBStorage (PostgreSQL)"] = lambda: optuna.storages.RDBStorage(rdb_url)
        storages["DjangoStorage (PostgreSQL)"] = lambda: DjangoStorage(using="postgres")
        storages["DjangoStorage (PG, async commit)"] = lambda: DjangoStorage(using="postgres_async")
    samplers = {
        "TPE": lambda: optuna.samplers.TPESampler(seed=0),
        "random": lambda: optuna.samplers.RandomSampler(seed=0),
    }

    python = sys.version.split()[0]
    print(f"{args.trials} trials per run, Optuna {optuna.__version__}, Python {python}")
    if not use_postgres:
        print(f"PostgreSQL not reachable at {POSTGRES_URL}: skipped")
    print(f"{'sampler':<8} {'storage':<32} {'ms/trial':>9} {'x InMemory':>11}")
    try:
        for sampler_name, make_sampler in samplers.items():
            baseline = None
            for storage_name, make_storage in storages.items():
                ms = run(make_storage(), make_sampler(), args.trials)
                baseline = baseline or ms
                print(f"{sampler_name:<8} {storage_name:<32} {ms:>9.2f} {ms / baseline:>10.2f}x")
    finally:
        if use_postgres:
            from django.db import connections

            connections.close_all()
            drop_postgres_database(BENCH_DB)
            drop_postgres_database(RDB_DB)


if __name__ == "__main__":
    main()
