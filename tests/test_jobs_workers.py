"""Jobs on real `manage.py qcluster` worker processes.

This module runs on the default backends (SQLite, django-q2's ORM broker) in the
normal test run, and again on PostgreSQL + the Redis broker from
tests/test_jobs_backends.py, which sets DATABASE_URL and REDIS_URL for a pytest
subprocess. Workers use short heartbeats (1 s, stale after 3 s) and the ORM
broker delivers a dead worker's task again after 4 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from rest_framework.test import APIClient

from studies.models import CommandObjective, Job, Study, Trial
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

WORKER_ENV = {
    "HUB_WORKERS": "1",
    "HUB_HEARTBEAT_INTERVAL": "1",
    "HUB_HEARTBEAT_GRACE": "3",
    "HUB_TASK_RETRY": "4",
    "HUB_TASK_TIMEOUT": "600",
    "LOG_LEVEL": "WARNING",
}
SLEEPY = (
    "import os, sys, time\n"
    "x, seconds = float(sys.argv[1]), float(sys.argv[2])\n"
    "print('pid', os.getpid(), flush=True)\n"
    "marks = os.environ.get('SLEEPY_MARKS')\n"
    "mark = marks and os.path.join(marks, os.environ['HUB_TRIAL_NUMBER'])\n"
    "if mark: open(mark + '.started', 'w')\n"
    "time.sleep(seconds)\n"
    "if mark: open(mark + '.done', 'w')\n"
    "print('value', x * x)\n"
)


def sleepy(seconds: float, marks: Path | None = None) -> str:
    """A command objective that sleeps, marking in ``marks`` when it starts and ends."""
    name = f"sleepy_{str(seconds).replace('.', '_')}"
    CommandObjective.objects.get_or_create(
        name=name,
        defaults={
            "argv": [sys.executable, "-c", SLEEPY, "{x}", str(seconds)],
            "search_space": {"x": {"type": "float", "low": -1, "high": 1}},
            "environment": {"SLEEPY_MARKS": str(marks)} if marks else {},
        },
    )
    return name


def post_job(user, study: Study, **body: Any) -> Job:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(f"/api/studies/{study.pk}/jobs/", body, format="json")
    assert response.status_code == 202, response.json()
    return Job.objects.get(pk=response.json()["id"])


def finished(job: Job, timeout: float = 90) -> Job:
    def done() -> bool:
        job.refresh_from_db()
        return not job.is_active

    wait_for(done, timeout, f"job {job.pk} to finish")
    return job


def peak_running(trials: list[Trial]) -> int:
    """The most trials that ran at once."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def worker_pid(trial: Trial) -> int:
    return int(trial.system_attrs["hub_worker"].rsplit(":", 1)[1])


def test_the_run_uses_the_configured_database_and_broker(db):
    from django.db import connection
    from django_q.brokers import get_broker

    postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    assert connection.vendor == ("postgresql" if postgres else "sqlite")
    broker = type(get_broker()).__name__
    assert broker == ("Redis" if os.environ.get("REDIS_URL") else "ORM")


@pytest.mark.parametrize(("mode", "concurrency"), [("durable", 1), ("memory", 2)])
def test_a_job_on_real_workers_gets_near_the_optimum(start_qcluster, alice, mode, concurrency):
    start_qcluster(**WORKER_ENV)
    study = Study.objects.create(
        name=f"sphere-{mode}",
        owner=alice,
        directions=["minimize"],
        objective="sphere",
        sampler={"type": "tpe", "options": {}, "seed": 0},
    )
    job = finished(post_job(alice, study, n_trials=40, mode=mode, concurrency=concurrency))
    assert job.status == "succeeded", job.error
    assert job.progress()["complete"] == 40 and study.trials.count() == 40
    assert job.best_value() < 1.0  # the optimum is 0 at the origin


def test_cancel_stops_a_running_job_and_kills_its_command(start_qcluster, alice):
    start_qcluster(**WORKER_ENV)
    study = Study.objects.create(
        name="cancelled", owner=alice, directions=["minimize"], objective=sleepy(60)
    )
    job = post_job(alice, study, n_trials=5)
    trial = wait_for(
        lambda: study.trials.filter(state=TrialState.RUNNING).first(), 30, "a running trial"
    )
    client = APIClient()
    client.force_authenticate(alice)
    response = client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    def killed() -> bool:
        trial.refresh_from_db()
        return trial.state == TrialState.FAIL

    wait_for(killed, 15, "the running trial to be killed")
    assert trial.system_attrs["hub_error"] == "TrialStopped: killed: the job was stopped"
    pid = int(trial.system_attrs["hub_output_tail"].split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    wait_for(lambda: job.slots.filter(finished=True).exists(), 15, "the slot to end")
    assert study.trials.count() == 1  # no trial started after the cancel
    job.refresh_from_db()
    assert job.status == "cancelled" and job.progress()["running"] == 0


def test_a_concurrency_3_job_on_2_worker_processes_runs_exactly_n_trials(start_qcluster, alice):
    start_qcluster(**WORKER_ENV)
    start_qcluster(**WORKER_ENV)
    study = Study.objects.create(
        name="shared", owner=alice, directions=["minimize"], objective=sleepy(0.3)
    )
    job = finished(post_job(alice, study, n_trials=24, concurrency=3))
    assert job.status == "succeeded", job.error
    trials = list(study.trials.all())
    assert len(trials) == 24 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({worker_pid(t) for t in trials}) == 2  # both processes ran trials
    # Never more trials at once than the job's concurrency.
    assert 2 <= peak_running(trials) <= 3


def test_a_worker_killed_mid_job_loses_no_trial(start_qcluster, alice, tmp_path):
    clusters = [start_qcluster(**WORKER_ENV), start_qcluster(**WORKER_ENV)]
    study = Study.objects.create(
        name="killed", owner=alice, directions=["minimize"], objective=sleepy(2.0, tmp_path)
    )
    job = post_job(alice, study, n_trials=8, concurrency=2)

    def running_trial() -> Trial | None:
        # One whose command started under a second ago: the kill is sure to land
        # during its 2 s sleep, however slow the machine is to deliver it.
        if study.trials.filter(state=TrialState.COMPLETE).count() < 2:
            return None
        for trial in study.trials.filter(state=TrialState.RUNNING):
            started = tmp_path / f"{trial.number}.started"
            if started.exists() and time.time() - started.stat().st_mtime < 1:
                return trial
        return None

    victim_trial = wait_for(running_trial, 60, "a running trial after two complete ones")
    victim = next(c for c in clusters if os.getpgid(worker_pid(victim_trial)) == c.pid)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_worker = victim_trial.system_attrs["hub_worker"]
    lost = [
        t
        for t in study.trials.filter(state=TrialState.RUNNING)
        if t.system_attrs["hub_worker"] == killed_worker
    ]
    assert lost
    start_qcluster(**WORKER_ENV)  # the replacement machine

    job = finished(job, timeout=120)
    assert job.status == "succeeded", job.error
    counted = study.trials.filter(state__in=[TrialState.COMPLETE, TrialState.PRUNED])
    assert counted.count() == 8 == job.progress()["complete"]
    for trial in lost:
        # Its command died with its worker rather than sleep on unseen.
        assert not (tmp_path / f"{trial.number}.done").exists()
        trial.refresh_from_db()
        assert trial.state == TrialState.FAIL
        assert trial.system_attrs["hub_stale"] is True
        rerun = [t for t in counted if t.system_attrs.get("hub_retry_of") == trial.number]
        assert len(rerun) == 1, [t.system_attrs for t in counted]
        assert rerun[0].external_params() == trial.external_params()
