"""Jobs: the API, validation, and the slot runner and watchdog run in this process.

Real worker processes (qcluster) are in tests/test_jobs_workers.py.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

import optuna
import pytest
from django.db import connections
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from optuna.trial import TrialState
from rest_framework.test import APIClient

from studies.actions import do_retry_job, do_start_job
from studies.jobs import tasks
from studies.jobs.base import WATCHDOG_SCHEDULE
from studies.jobs.job_storage import JobStorage
from studies.models import CommandObjective, Job, JobSlot, Study, Trial
from studies.storage import DjangoStorage, get_storage, optuna_study_for

FAIL_SPACE = {"x": {"type": "float", "low": -1, "high": 1}}


def fails_when_negative(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    if x < 0:
        raise ValueError(f"x is negative: {x}")
    return x


@pytest.fixture
def fast(settings):
    settings.HUB_HEARTBEAT_INTERVAL = 1
    settings.HUB_HEARTBEAT_GRACE = 2
    settings.HUB_OBJECTIVES = ["tests.test_jobs.fails_when_negative"]
    return settings


def make_study(owner, objective: str = "sphere", **fields) -> Study:
    fields.setdefault("directions", ["minimize"])
    fields.setdefault("sampler", {"type": "tpe", "options": {}, "seed": 0})
    name = f"study-{Study.objects.count()}-{objective}"
    return Study.objects.create(name=name, owner=owner, objective=objective, **fields)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def run_slots(job: Job, indexes: list[int]) -> None:
    """Run slots at once in threads, as separate workers would."""

    def target(index: int) -> None:
        try:
            tasks.run_job_slot(job.pk, index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def states(job: Job) -> dict[str, int]:
    job.refresh_from_db()
    return job.progress()


# The API


def test_posting_a_job_answers_202_at_once_and_queues_one_task_per_slot(
    db, alice, django_capture_on_commit_callbacks
):
    study = make_study(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post(
            f"/api/studies/{study.pk}/jobs/", {"n_trials": 10, "concurrency": 3}, format="json"
        )
    assert response.status_code == 202, response.json()
    job = Job.objects.get()
    assert response.json() == {"id": job.pk, "status": "queued", "url": f"/api/jobs/{job.pk}/"}
    assert response["Location"] == f"/api/jobs/{job.pk}/"
    assert OrmQ.objects.count() == 3
    assert job.slots.count() == 3 and job.created_by == alice


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "n_trials"),
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": "10"}, "n_trials"),
        ({"n_trials": True}, "n_trials"),
        ({"n_trials": 2.5}, "n_trials"),
        ({"n_trials": 5, "concurrency": 9}, "concurrency"),
        ({"n_trials": 5, "concurrency": 0}, "concurrency"),
        ({"n_trials": 5, "timeout": -1}, "timeout"),
        ({"n_trials": 5, "timeout": "soon"}, "timeout"),
        ({"n_trials": 5, "delay": -0.5}, "delay"),
        ({"n_trials": 5, "max_failed_trials": 0}, "max_failed_trials"),
        ({"n_trials": 5, "mode": "fast"}, "mode"),
        ({"n_trials": 5, "trials": 5}, "trials"),
    ],
)
def test_a_bad_job_request_is_a_400_naming_the_field_and_queues_nothing(
    db, alice, body, field, django_capture_on_commit_callbacks
):
    study = make_study(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post(f"/api/studies/{study.pk}/jobs/", body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Job.objects.exists() and not OrmQ.objects.exists()


def test_a_bad_job_request_reports_every_invalid_field_at_once(db, alice):
    study = make_study(alice, objective="")
    body = {"n_trials": 0, "concurrency": 0, "timeout": -1, "mode": "fast", "trials": 5}
    response = api(alice).post(f"/api/studies/{study.pk}/jobs/", body, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"n_trials", "concurrency", "timeout", "mode", "trials", "objective"}
    assert errors["n_trials"] == ["must be at least 1"]
    assert "has no objective" in errors["objective"][0]
    assert not Job.objects.exists()


def test_a_job_needs_a_study_with_an_objective_that_fits_it(db, alice):
    client = api(alice)
    cases = [
        (make_study(alice, objective=""), "objective", "has no objective"),
        (make_study(alice, objective="gone"), "objective", "not a registered objective"),
        (make_study(alice, objective="binh_korn"), "objective", "2 value(s)"),
        (
            make_study(alice, search_space={"c": {"type": "categorical", "choices": [1, 2]}}),
            "search_space.c",
            "numeric parameters only",
        ),
        (make_study(alice, sampler={"type": "grid"}), "sampler.options.search_space", ""),
    ]
    for study, field, message in cases:
        response = client.post(f"/api/studies/{study.pk}/jobs/", {"n_trials": 3}, format="json")
        assert response.status_code == 400
        assert message in response.json()[field][0], response.json()
    response = client.post("/api/studies/1/jobs/", [1, 2], format="json")
    assert response.status_code == 400 and "non_field_errors" in response.json()
    assert not Job.objects.exists()


def test_only_the_owner_or_staff_start_and_cancel_jobs(db, alice, bob, staff):
    study = make_study(alice)
    url = f"/api/studies/{study.pk}/jobs/"
    assert api(bob).post(url, {"n_trials": 5}, format="json").status_code == 403
    assert not Job.objects.exists()
    assert api(staff).post(url, {"n_trials": 5}, format="json").status_code == 202
    job = Job.objects.get()
    assert api(bob).post(f"/api/jobs/{job.pk}/cancel/").status_code == 403
    assert api(bob).get(f"/api/jobs/{job.pk}/").status_code == 200  # reading is open
    assert Job.objects.get().status == "queued"
    assert APIClient().get(f"/api/jobs/{job.pk}/").status_code in (401, 403)


def test_unknown_studies_and_jobs_are_404s(db, alice):
    client = api(alice)
    assert client.post("/api/studies/999/jobs/", {"n_trials": 1}, format="json").status_code == 404
    assert client.get("/api/studies/999/jobs/").status_code == 404
    assert client.get("/api/jobs/999/").status_code == 404
    assert client.post("/api/jobs/999/cancel/").status_code == 404


def test_jobs_are_listed_per_study_newest_first_and_read_by_id(db, alice):
    study, other = make_study(alice), make_study(alice)
    first = do_start_job(study, alice, n_trials=5)
    second = do_start_job(study, alice, n_trials=7, concurrency=2, mode="memory")
    do_start_job(other, alice, n_trials=3)
    listed = api(alice).get(f"/api/studies/{study.pk}/jobs/").json()
    assert [j["id"] for j in listed["results"]] == [second.pk, first.pk]
    body = api(alice).get(f"/api/jobs/{second.pk}/").json()
    assert body["status"] == "queued" and body["mode"] == "memory"
    progress = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "n_trials": 7}
    assert body["progress"] == progress
    assert body["best_value"] is None and body["started_at"] is None
    assert body["url"] == f"/api/jobs/{second.pk}/"


def test_cancelling_a_queued_job_ends_it_and_an_ended_job_cannot_be_cancelled(db, alice):
    job = do_start_job(make_study(alice), alice, n_trials=5)
    response = api(alice).post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["stop_reason"] == "cancelled"
    assert api(alice).post(f"/api/jobs/{job.pk}/cancel/").status_code == 200  # idempotent
    Job.objects.filter(pk=job.pk).update(status="succeeded")
    response = api(alice).post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]


def test_the_objectives_endpoint_lists_names_directions_and_default_spaces(db, alice):
    response = api(alice).get("/api/objectives/")
    assert response.status_code == 200
    listed = {o["name"]: o for o in response.json()["results"]}
    assert listed["digits_sgd"]["directions"] == ["maximize"]
    assert listed["digits_sgd"]["kind"] == "sklearn"
    assert set(listed["branin"]["search_space"]) == {"x0", "x1"}
    assert "description" in listed["zdt1"]


def test_a_job_is_shown_in_the_openapi_schema(client, alice):
    client.force_login(alice)  # the schema is for signed-in users
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    for path in [
        "/api/objectives/",
        "/api/studies/{study_id}/jobs/",
        "/api/jobs/{id}/",
        "/api/jobs/{id}/cancel/",
    ]:
        assert path in paths


# Running slots in this process


@pytest.mark.parametrize("mode", ["durable", "memory"])
def test_a_job_runs_exactly_n_trials_and_tags_them(transactional_db, alice, fast, mode):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=25, mode=mode)
    result = tasks.run_job_slot(job.pk, 0)
    assert "done" in result
    assert states(job)["complete"] == 25
    assert study.trials.count() == 25
    assert job.status == "succeeded" and job.stop_reason == "n_trials"
    assert job.best_value() == min(study.trials.values_list("value", flat=True))
    assert job.best_value() < 1.0  # sphere: the optimum is 0
    assert all(t.system_attrs["hub_job_id"] == job.pk for t in study.trials.all())


@pytest.mark.parametrize("mode", ["durable", "memory"])
def test_concurrent_slots_together_run_exactly_n_trials(transactional_db, alice, fast, mode):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=30, concurrency=3, mode=mode)
    run_slots(job, [0, 1, 2])
    progress = states(job)
    assert progress["complete"] == 30 and study.trials.count() == 30, progress
    assert job.status == "succeeded", (job.status, job.error)
    # The slots shared the trials rather than each running its own 30.
    slots = list(job.job_trials.values_list("slot", flat=True))
    assert len(set(slots)) >= 2, slots


def test_a_memory_job_is_seeded_with_the_studys_trials_and_counts_only_its_own(
    transactional_db, alice, fast
):
    study = make_study(alice, sampler={"type": "random", "seed": 1})
    earlier = optuna_study_for(study, DjangoStorage())
    earlier.optimize(lambda t: t.suggest_float("x0", -5, 5) ** 2, n_trials=5)
    job = do_start_job(study, alice, n_trials=10, mode="memory")
    tasks.run_job_slot(job.pk, 0)
    assert states(job)["complete"] == 10
    assert study.trials.count() == 15
    assert sorted(study.trials.values_list("number", flat=True)) == list(range(15))


def test_a_duplicate_or_late_task_does_nothing(transactional_db, alice, fast):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=5)
    # Another worker holds the slot and is alive.
    JobSlot.objects.filter(job=job).update(token="someone", heartbeat=timezone.now())
    assert "nothing to do" in tasks.run_job_slot(job.pk, 0)
    assert not study.trials.exists()
    JobSlot.objects.filter(job=job).update(token="", heartbeat=None)
    tasks.run_job_slot(job.pk, 0)
    assert "nothing to do" in tasks.run_job_slot(job.pk, 0)  # the job has ended
    assert study.trials.count() == 5


def test_failed_trials_do_not_count_toward_n_trials(transactional_db, alice, fast):
    # Seeded: half the trials fail, and unseeded a run could reach the default
    # failure limit, max(10, 2 x n_trials) = 24, before its 12 successes.
    sampler = {"type": "random", "seed": 0}
    study = make_study(alice, objective="fails_when_negative", sampler=sampler)
    job = do_start_job(study, alice, n_trials=12)
    tasks.run_job_slot(job.pk, 0)
    progress = states(job)
    assert progress["complete"] == 12 and progress["failed"] > 0
    assert job.n_failed == progress["failed"]
    failed = study.trials.filter(state=TrialState.FAIL).first()
    assert failed.system_attrs["hub_error"].startswith("ValueError: x is negative")


def test_a_job_whose_trials_keep_failing_stops_with_a_clear_error(transactional_db, alice, fast):
    CommandObjective.objects.create(
        name="crashes",
        argv=[sys.executable, "-c", "import sys; sys.exit('CUDA out of memory')"],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    study = make_study(alice, objective="crashes")
    job = do_start_job(study, alice, n_trials=50, max_failed_trials=3)
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "failed" and job.stop_reason == "max_failed_trials"
    assert study.trials.count() == 3
    assert "3 trials failed (max_failed_trials is 3)" in job.error
    assert "exited with code 1" in job.error


def test_a_memory_job_stops_at_max_failed_trials_too(transactional_db, alice, fast):
    study = make_study(alice, objective="fails_when_negative", sampler={"type": "random"})
    job = do_start_job(study, alice, n_trials=1000, max_failed_trials=4, mode="memory")
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "failed" and job.n_failed == 4
    assert states(job)["failed"] == 4  # the failed trials reached the database


def test_a_timeout_stops_a_job(transactional_db, alice, fast):
    CommandObjective.objects.create(
        name="slowish",
        argv=[sys.executable, "-c", "import time; time.sleep(0.3); print('value 1')"],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    job = do_start_job(make_study(alice, objective="slowish"), alice, n_trials=100, timeout=1.5)
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.stop_reason == "timeout"
    assert 1 <= states(job)["complete"] < 10


def test_delay_staggers_trial_starts(transactional_db, alice, fast):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=4, delay=0.3, concurrency=2)
    run_slots(job, [0, 1])
    starts = sorted(study.trials.values_list("datetime_start", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 4 and min(gaps) >= 0.25, gaps


# Workers that die, and the watchdog


def dead_worker_trial(job: Job) -> Trial:
    """Leave a job as a worker killed mid-trial would: slot leased, trial running."""
    storage = JobStorage(job.pk, 0)
    study = optuna_study_for(job.study, storage)
    trial = study.ask()
    trial.suggest_float("x0", -5.12, 5.12)
    trial.suggest_float("x1", -5.12, 5.12)
    long_ago = timezone.now() - timedelta(seconds=60)
    Job.objects.filter(pk=job.pk).update(status="running", started_at=long_ago)
    JobSlot.objects.filter(job=job).update(token="dead", heartbeat=long_ago)
    Trial.objects.filter(pk=trial._trial_id).update(heartbeat=long_ago)
    return Trial.objects.get(pk=trial._trial_id)


def test_a_trial_whose_worker_died_is_rerun_with_the_same_parameters(transactional_db, alice, fast):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=6)
    lost = dead_worker_trial(job)
    OrmQ.objects.all().delete()

    actions = tasks.check_jobs()
    lost.refresh_from_db()
    assert lost.state == TrialState.FAIL
    assert "stopped sending heartbeats" in lost.system_attrs["hub_error"]
    job.refresh_from_db()
    assert job.retry_params[0]["number"] == lost.number
    assert job.n_resumes == 1 and "restarted slot 0" in job.error
    assert job.status == "queued"  # no worker runs it until the task is picked up
    assert OrmQ.objects.count() == 1, actions  # the slot's task, enqueued again

    tasks.run_job_slot(job.pk, 0)
    assert states(job)["complete"] == 6 and job.status == "succeeded"
    rerun = study.trials.get(system_attrs__contains='"hub_retry_of"')
    assert rerun.system_attrs["hub_retry_of"] == lost.number
    assert rerun.external_params() == lost.external_params()
    assert rerun.state == TrialState.COMPLETE


def test_the_watchdog_fails_a_job_whose_workers_keep_dying(transactional_db, alice, fast):
    fast.HUB_MAX_JOB_RESUMES = 1
    job = do_start_job(make_study(alice), alice, n_trials=6)
    dead_worker_trial(job)
    tasks.check_jobs()
    assert Job.objects.get(pk=job.pk).status == "queued"
    dead_worker_trial(job)
    tasks.check_jobs()
    job.refresh_from_db()
    assert job.status == "failed" and job.stop_reason == "workers_died"
    assert "its workers died 2 times" in job.error
    assert not job.study.trials.filter(state=TrialState.RUNNING).exists()


def test_the_watchdog_enqueues_a_lost_task_again_backing_off(db, alice, fast):
    job = do_start_job(make_study(alice), alice, n_trials=6)
    JobSlot.objects.filter(job=job).update(
        enqueued_at=timezone.now() - timedelta(seconds=10), n_enqueued=1
    )
    assert tasks.check_jobs() == [f"job {job.pk}: enqueued slots [0]"]
    assert OrmQ.objects.count() == 1
    assert tasks.check_jobs() == []  # not again before the back-off has passed
    slot = JobSlot.objects.get(job=job)
    assert slot.n_enqueued == 2


def test_the_watchdog_schedule_is_created_once(db, alice):
    study = make_study(alice)
    do_start_job(study, alice, n_trials=1)
    do_start_job(study, alice, n_trials=1)
    schedule = Schedule.objects.get(name=WATCHDOG_SCHEDULE)
    assert schedule.func == "studies.jobs.tasks.check_jobs"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1


def test_a_cancelled_job_can_be_retried_to_its_full_n_trials(transactional_db, alice, fast):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=8)
    assert job.cancel() and job.status == "cancelled"
    assert "nothing to do" in tasks.run_job_slot(job.pk, 0)
    assert do_retry_job(job, alice) and job.status == "queued"
    assert not do_retry_job(job, alice)  # only failed, cancelled or timed-out jobs
    tasks.run_job_slot(job.pk, 0)
    assert states(job)["complete"] == 8 and job.status == "succeeded"


def test_the_admin_cancels_and_retries_jobs(db, admin_client, alice):
    job = do_start_job(make_study(alice), alice, n_trials=3)
    response = admin_client.post(
        "/admin/studies/job/", {"action": "cancel_jobs", "_selected_action": [job.pk]}
    )
    assert response.status_code == 302
    assert Job.objects.get(pk=job.pk).status == "cancelled"
    admin_client.post("/admin/studies/job/", {"action": "retry_jobs", "_selected_action": [job.pk]})
    assert Job.objects.get(pk=job.pk).status == "queued"
    page = admin_client.get("/admin/studies/job/").content.decode()
    assert "0/3 (0 running, 0 failed)" in page


def test_a_memory_job_writes_trials_while_it_runs_and_all_of_them_when_cancelled(
    transactional_db, alice, fast
):
    fast.HUB_MEMORY_FLUSH_INTERVAL = 1
    study = make_study(alice, sampler={"type": "random", "seed": 0})
    job = do_start_job(study, alice, n_trials=1_000_000, mode="memory")
    thread = threading.Thread(target=run_slots, args=(job, [0]))
    thread.start()
    deadline = timezone.now() + timedelta(seconds=30)
    while not study.trials.exists() and timezone.now() < deadline:
        threading.Event().wait(0.1)
    written_while_running = study.trials.count()
    assert written_while_running > 0 and Job.objects.get(pk=job.pk).status == "running"
    job.cancel()
    thread.join(30)
    assert not thread.is_alive()
    job.refresh_from_db()
    assert job.status == "cancelled"
    # Trials finished before the workers noticed are kept, none are lost.
    final = study.trials.count()
    assert final >= written_while_running
    assert states(job)["complete"] == final
    assert JobSlot.objects.get(job=job).finished


def test_a_long_task_hands_its_slot_to_a_fresh_task_before_django_q2_times_out(
    transactional_db, alice, fast, monkeypatch
):
    from django_q.conf import Conf

    CommandObjective.objects.create(
        name="tenth",
        argv=[sys.executable, "-c", "import time; time.sleep(0.1); print('value 1')"],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    study = make_study(alice, objective="tenth")
    job = do_start_job(study, alice, n_trials=20)
    OrmQ.objects.all().delete()
    monkeypatch.setattr(Conf, "TIMEOUT", 1)
    assert "handed over" in tasks.run_job_slot(job.pk, 0)
    assert OrmQ.objects.count() == 1  # its successor
    slot = JobSlot.objects.get(job=job)
    assert slot.token == "" and not slot.finished
    assert 0 < states(job)["complete"] < 20 and job.status == "running"
    monkeypatch.setattr(Conf, "TIMEOUT", 600)
    tasks.run_job_slot(job.pk, 0)
    assert states(job)["complete"] == 20 and job.status == "succeeded"


def test_a_job_runs_trials_enqueued_on_its_study_first(transactional_db, alice, fast):
    study = make_study(alice)
    optuna_study = optuna_study_for(study, DjangoStorage())
    optuna_study.enqueue_trial({"x0": 0.5, "x1": -0.5})
    optuna_study.enqueue_trial({"x0": 0.0, "x1": 0.0})
    job = do_start_job(study, alice, n_trials=5)
    tasks.run_job_slot(job.pk, 0)
    assert states(job)["complete"] == 5 and study.trials.count() == 5
    first, second = (get_storage().get_trial(t.pk) for t in study.trials.order_by("number")[:2])
    assert first.params == {"x0": 0.5, "x1": -0.5} and second.value == 0.0
    assert first.system_attrs["hub_job_id"] == job.pk
