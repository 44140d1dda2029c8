"""Job overhead: a hub job against plain Optuna, and the time from POST to a running trial.

    .venv/bin/python benchmarks/job_overhead.py [--trials 1000] [--posts 10]

In one process, on a scratch SQLite database (the default backend):

1. N TPE trials of the built-in ``sphere`` objective (2 floats, trivial) with
   plain Optuna on InMemoryStorage, then as a hub job in durable mode and in
   memory mode, run by the worker's task function (studies.jobs.tasks.run_job_slot)
   in this process so that only the job machinery differs: slot lease and
   heartbeat thread, claiming each trial under the job's row lock, trial
   heartbeats, the per-trial status check, and (memory mode) batched writes.
2. With a real `manage.py qcluster` (ORM broker), the time from POST
   /api/studies/{id}/jobs/ to the job's first trial row existing (RUNNING),
   repeated --posts times.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SCRATCH = Path(tempfile.mkdtemp(prefix="hub-job-bench-"))
os.environ["DATABASE_URL"] = f"sqlite:///{SCRATCH / 'hub.sqlite3'}"
os.environ["HUB_VAR_DIR"] = str(SCRATCH)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")

import django  # noqa: E402
import optuna  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from studies.actions import do_start_job  # noqa: E402
from studies.jobs import tasks  # noqa: E402
from studies.models import Job, Study  # noqa: E402
from studies.objectives.registry import get_objective  # noqa: E402

SAMPLER = {"type": "tpe", "options": {}, "seed": 0}


def plain_optuna(n_trials: int) -> tuple[float, float]:
    objective = get_objective("sphere").make_objective(None)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    elapsed = time.perf_counter() - start
    return elapsed * 1000 / n_trials, study.best_value


def hub_job(user: User, mode: str, n_trials: int) -> tuple[float, float]:
    study = Study.objects.create(
        name=f"bench-{mode}-{time.time()}",
        owner=user,
        directions=["minimize"],
        objective="sphere",
        sampler=SAMPLER,
    )
    job = do_start_job(study, user, n_trials=n_trials, mode=mode)
    start = time.perf_counter()
    tasks.run_job_slot(job.pk, 0)
    elapsed = time.perf_counter() - start
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.progress()["complete"] == n_trials == study.trials.count()
    return elapsed * 1000 / n_trials, job.best_value()


def post_to_first_trial(user: User, posts: int) -> list[float]:
    env = {
        **os.environ,
        "HUB_NO_BOOTSTRAP": "1",
        "HUB_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=BASE_DIR, env=env, start_new_session=True
    )
    client = APIClient(SERVER_NAME="localhost")
    client.force_authenticate(user)
    study = Study.objects.create(
        name=f"bench-post-{time.time()}",
        owner=user,
        directions=["minimize"],
        objective="sphere",
        sampler=SAMPLER,
    )
    times = []
    try:
        for i in range(posts + 1):  # the first one warms the worker up
            start = time.perf_counter()
            response = client.post(f"/api/studies/{study.pk}/jobs/", {"n_trials": 1}, format="json")
            assert response.status_code == 202, response.content
            job = Job.objects.get(pk=response.json()["id"])
            while not job.trials().exists():
                time.sleep(0.002)
                if time.perf_counter() - start > 60:
                    raise RuntimeError("no trial started within 60 s: is the cluster running?")
            if i:
                times.append(time.perf_counter() - start)
            while Job.objects.get(pk=job.pk).is_active:
                time.sleep(0.01)
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--posts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest counts")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", is_staff=True)

    print(
        f"{args.trials} TPE trials of sphere (2 floats), Optuna {optuna.__version__}, "
        f"Python {sys.version.split()[0]}, SQLite, {os.cpu_count()} CPUs"
    )
    plain_optuna(50)  # warm up: imports and first-use costs stay out of the figures
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "memory": [], "durable": []}
    for _ in range(args.repeat):  # interleaved, so load on the machine hits all alike
        runs["plain"].append(plain_optuna(args.trials))
        for mode in ("memory", "durable"):
            runs[mode].append(hub_job(user, mode, args.trials))
    baseline = min(ms for ms, _ in runs["plain"])
    title = f"run (fastest of {args.repeat})"
    print(f"{title:<34}{'ms/trial':>10}{'x plain':>10}{'best':>12}")
    labels = {
        "plain": "plain Optuna, InMemoryStorage",
        "memory": "hub job, memory mode",
        "durable": "hub job, durable mode",
    }
    for key, label in labels.items():
        ms, best = min(runs[key])
        print(f"{label:<34}{ms:>10.2f}{ms / baseline:>9.2f}x{best:>12.2e}")

    times = post_to_first_trial(user, args.posts)
    print(
        f"POST -> first trial running (qcluster, ORM broker, {len(times)} jobs): "
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
