"""Server time and size of the study page and each chart's JSON, by study size.

    .venv/bin/python benchmarks/pages.py                       # 1 000, 10 000, 100 000 trials
    .venv/bin/python benchmarks/pages.py --trials 1000 10000   # a subset
    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/pages.py

Each study is built with bulk_create of Trial rows (a realistic mix of states,
a conditional search space, ten intermediate values per trial) in a fresh
SQLite database under a temporary directory, unless DATABASE_URL is set (then
the benchmark's studies are created there and deleted afterwards). Requests go
through Django's test client in this process, so the times are server time:
view, queries, chart building and JSON encoding, without the network.

"cold" is the first request for a chart in a fresh process (it reads the trials
into the process cache); "warm" is the same request again (served from the
chart cache); "+1 trial" is the request after one more trial completed (the
chart is rebuilt, but only the new trial is read from the database).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def setup_django() -> None:
    if "DATABASE_URL" not in os.environ:
        var = tempfile.mkdtemp(prefix="hub-bench-")
        os.environ["HUB_VAR_DIR"] = var
        os.environ["DATABASE_URL"] = f"sqlite:///{var}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")
    os.environ.setdefault("HUB_NO_BOOTSTRAP", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


SEARCH_SPACE = {
    "x": {"type": "float", "low": -10.0, "high": 10.0},
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "layers": {"type": "int", "low": 1, "high": 8},
    "booster": {"type": "categorical", "choices": ["gbtree", "dart", "linear"]},
    "rate_drop": {"type": "float", "low": 0.0, "high": 1.0, "when": {"booster": ["dart"]}},
}


def make_study(name: str, n_trials: int, owner=None, directions=("minimize",)):  # noqa: ANN001
    """A study with ``n_trials`` synthetic trials, written with bulk_create."""
    import numpy as np
    from optuna.distributions import distribution_to_json
    from optuna.trial import TrialState

    from studies.config.search_space import to_distribution
    from studies.models import Study, Trial, first_value

    dists = {n: to_distribution(s) for n, s in SEARCH_SPACE.items()}
    dist_json = {n: distribution_to_json(d) for n, d in dists.items()}
    study = Study.objects.create(
        name=name,
        directions=list(directions),
        owner=owner,
        search_space=SEARCH_SPACE,
        param_distributions=dist_json,
        sampler={"type": "tpe", "options": {}, "seed": None},
        pruner={"type": "median", "options": {}},
    )
    rng = np.random.default_rng(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    states = rng.choice(
        [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL],
        size=n_trials,
        p=[0.9, 0.07, 0.03],
    )
    rows = []
    for number in range(n_trials):
        x = float(rng.uniform(-10, 10))
        lr = float(10 ** rng.uniform(-5, 0))
        layers = int(rng.integers(1, 9))
        booster = int(rng.integers(0, 3))
        params = {"x": x, "lr": lr, "layers": float(layers), "booster": float(booster)}
        names = ["x", "lr", "layers", "booster"]
        if booster == 1:
            params["rate_drop"] = float(rng.uniform(0, 1))
            names.append("rate_drop")
        loss = x * x + (math.log10(lr) + 2.5) ** 2 + abs(layers - 4) + booster
        state = TrialState(int(states[number]))
        values = None
        if state == TrialState.COMPLETE:
            values = [loss + float(rng.normal(0, 0.5))]
            if len(directions) > 1:
                values.append(-loss / 2 + float(rng.normal(0, 2)) + x)
        steps = 10 if state != TrialState.PRUNED else 4
        began = start + timedelta(seconds=number * 2)
        rows.append(
            Trial(
                study=study,
                number=number,
                state=state,
                values=values,
                value=first_value(values),
                params=params,
                distributions={n: dist_json[n] for n in names},
                intermediate_values={
                    str(s): loss * (1 + 2 / (s + 1)) + float(rng.normal(0, 0.1))
                    for s in range(steps)
                },
                datetime_start=began,
                datetime_complete=began + timedelta(seconds=float(rng.uniform(0.5, 3))),
            )
        )
        if len(rows) == 5000:
            Trial.objects.bulk_create(rows)
            rows = []
    Trial.objects.bulk_create(rows)
    # The rows went around the storage, which keeps the study's trial summary.
    Study.objects.filter(pk=study.pk).recount()
    study.refresh_from_db()
    return study


def add_trial(study) -> None:  # noqa: ANN001
    """One more completed trial, as a worker would tell it."""
    import optuna

    from studies.storage import get_storage

    optuna_study = optuna.load_study(
        study_name=study.name, storage=get_storage(), sampler=optuna.samplers.RandomSampler()
    )
    trial = optuna_study.ask()
    trial.suggest_float("x", -10, 10)
    optuna_study.tell(trial, [1.0] * len(study.directions))


def timed(client, url: str) -> tuple[float, int, int]:  # noqa: ANN001
    began = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - began
    return elapsed * 1000, len(response.content), response.status_code


def run(sizes: list[int]) -> None:
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.test import Client
    from django.urls import reverse

    from studies.charts import charts_for
    from studies.models import Study

    user, _ = get_user_model().objects.get_or_create(username="bench")
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    print(
        f"{'trials':>8}  {'request':<28} {'cold ms':>9} {'warm ms':>9} {'+1 trial':>9} {'size':>10}"
    )
    created = []
    try:
        for size in sizes:
            for directions in (("minimize",), ("minimize", "maximize")):
                name = f"bench-{size}-{len(directions)}obj-{time.time_ns()}"
                began = time.perf_counter()
                study = make_study(name, size, owner=user, directions=directions)
                created.append(study.pk)
                build = time.perf_counter() - began
                label = f"{len(directions)} objective{'s' if len(directions) > 1 else ''}"
                print(f"{size:>8}  ({label}, built in {build:.1f} s)")
                cache.clear()
                urls = [("study page", reverse("studies:study", args=[study.pk]))]
                urls.append(("status JSON", reverse("studies:study_status", args=[study.pk])))
                urls.append(("trials table", reverse("studies:study_trials", args=[study.pk])))
                for chart, _title in charts_for(study):
                    if len(directions) > 1 and chart not in ("pareto", "hypervolume", "history"):
                        continue
                    urls.append(
                        (f"chart {chart}", reverse("studies:chart", args=[study.pk, chart]))
                    )
                results = [(label, url, *timed(client, url)) for label, url in urls]
                warm = [timed(client, url)[0] for _, url in urls]
                add_trial(study)
                again = [timed(client, url)[0] for _, url in urls]
                for (label, _url, cold_ms, size_b, status), warm_ms, again_ms in zip(
                    results, warm, again, strict=True
                ):
                    flag = "" if status == 200 else f"  HTTP {status}"
                    print(
                        f"{'':>8}  {label:<28} {cold_ms:>9.0f} {warm_ms:>9.0f} {again_ms:>9.0f} "
                        f"{size_b / 1024:>8.0f} kB{flag}"
                    )
    finally:
        Study.objects.filter(pk__in=created).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = parser.parse_args()
    setup_django()
    from django.db import connection

    python = sys.version.split()[0]
    print(f"database: {connection.vendor}, {os.cpu_count()} CPU cores, Python {python}")
    run(args.trials)


if __name__ == "__main__":
    main()
