"""Requests that would exhaust the server (issue #9): each is a clear 4xx, or is bounded.

Every attack is made as a hostile ordinary user (alice, not staff). The limits:
grid points and sampler/pruner option ranges (studies/config/samplers.py), a
default failure limit, delays that park instead of sleeping in a worker,
per-user active jobs (429) and running slots, and fair order between users
(studies/jobs/fair.py). Live tests run a real gunicorn or real qcluster workers.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import optuna
import pytest
import requests
from django.utils import timezone
from django_q.models import OrmQ
from optuna.trial import TrialState

from studies.actions import do_start_job
from studies.config.errors import ConfigError
from studies.config.samplers import OPTION_BOUNDS, PRUNERS, SAMPLERS, build_sampler, json_options
from studies.jobs import fair, tasks
from studies.models import CommandObjective, Job, JobSlot, Study
from tests.conftest import token_for, wait_for
from tests.test_jobs import api as client
from tests.test_jobs import make_study as make_job_study
from tests.test_jobs_workers import WORKER_ENV, finished, peak_running, post_job, sleepy

GRID_5_POW_20 = {f"p{i}": [0, 1, 2, 3, 4] for i in range(20)}
SPACE_5_POW_20 = {f"p{i}": {"type": "categorical", "choices": [0, 1, 2, 3, 4]} for i in range(20)}
INT_3000 = {"type": "int", "low": 1, "high": 3000}


def always_fails(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0, 1)
    raise RuntimeError("the objective always fails")


@pytest.fixture
def fast(settings):
    settings.HUB_HEARTBEAT_INTERVAL = 1
    settings.HUB_HEARTBEAT_GRACE = 2
    settings.HUB_OBJECTIVES = ["tests.test_abuse_limits.always_fails"]
    return settings


@pytest.fixture
def shared(fast):
    """Slots a test leaves "running" (lease_as_running) stay live for the whole test."""
    fast.HUB_HEARTBEAT_GRACE = 60
    return fast


def make_study(owner, objective: str = "sphere", **fields) -> Study:
    """tests.test_jobs's study, with the random sampler: these tests are about limits."""
    fields.setdefault("sampler", {"type": "random", "options": {}, "seed": 0})
    return make_job_study(owner, objective, **fields)


def lease_as_running(job: Job, index: int = 0) -> None:
    """Leave a slot as a live worker holding it would."""
    JobSlot.objects.filter(job=job, index=index).update(token="alive", heartbeat=timezone.now())


# Grids and sampler options


@pytest.mark.parametrize(
    "body",
    [
        {"sampler": {"type": "grid", "options": {"search_space": GRID_5_POW_20}}},
        {"sampler": {"type": "grid"}, "search_space": SPACE_5_POW_20},
        {"sampler": {"type": "grid"}, "search_space": {"a": INT_3000, "b": INT_3000}},
        {
            "sampler": {"type": "grid"},
            "search_space": {"x": {"type": "float", "low": 0, "high": 1, "step": 1e-300}},
        },
    ],
)
def test_a_grid_beyond_the_limit_is_a_400_counted_without_listing_it(api, body):
    response = api.post("/api/studies/", {"name": "huge-grid", **body}, format="json")
    assert response.status_code == 400, response.json()
    message = response.json()["sampler.options.search_space"][0]
    assert "HUB_MAX_GRID_POINTS" in message and "100,000" in message
    assert not Study.objects.exists()


def test_a_bruteforce_parameter_with_too_many_values_is_a_400_naming_it(api):
    space = {"n": {"type": "int", "low": 0, "high": 10**12}}
    body = {"name": "brute", "sampler": {"type": "bruteforce"}, "search_space": space}
    response = api.post("/api/studies/", body, format="json")
    assert response.status_code == 400
    assert "HUB_MAX_GRID_POINTS" in response.json()["search_space.n"][0]


def test_a_grid_within_the_limit_still_works(api, settings):
    settings.HUB_MAX_GRID_POINTS = 25
    body = {"name": "grid", "sampler": {"type": "grid"}, "search_space": SPACE_5_POW_20}
    body["search_space"] = dict(list(SPACE_5_POW_20.items())[:2])  # 25 points
    assert api.post("/api/studies/", body, format="json").status_code == 201
    body["search_space"] = dict(list(SPACE_5_POW_20.items())[:3])  # 125 points
    body["name"] = "grid-3"
    assert api.post("/api/studies/", body, format="json").status_code == 400


@pytest.mark.parametrize(
    ("kind", "option", "value"),
    [
        ("tpe", "n_ei_candidates", 20_000_000),
        ("tpe", "n_ei_candidates", 0),
        ("tpe", "n_startup_trials", -1),
        ("tpe", "n_startup_trials", 10**30),
        ("tpe", "prior_weight", 0),
        ("nsga2", "population_size", 10_000_000),
        ("nsga3", "population_size", 1),
        ("nsga2", "mutation_prob", 1.5),
        ("nsga3", "dividing_parameter", 10_000),
        ("cmaes", "popsize", 10_000_000),
        ("cmaes", "inc_popsize", 1000),
        ("cmaes", "sigma0", -1.0),
        ("gp", "n_startup_trials", -5),
    ],
)
def test_an_out_of_range_sampler_option_is_a_400_naming_it(api, kind, option, value):
    sampler = {"type": kind, "options": {option: value}}
    response = api.post("/api/studies/", {"name": "s", "sampler": sampler}, format="json")
    assert response.status_code == 400, response.json()
    assert f"sampler.options.{option}" in response.json(), response.json()
    assert "must be" in response.json()[f"sampler.options.{option}"][0]
    assert not Study.objects.exists()


@pytest.mark.parametrize(
    ("kind", "option", "value"),
    [
        ("median", "n_warmup_steps", -5),
        ("percentile", "percentile", 101.0),
        ("hyperband", "reduction_factor", 1),
        ("successive_halving", "min_early_stopping_rate", 10**6),
        ("patient", "patience", -1),
        ("wilcoxon", "p_threshold", 2.0),
        ("threshold", "interval_steps", 0),
    ],
)
def test_an_out_of_range_pruner_option_is_a_400_naming_it(api, kind, option, value):
    pruner = {"type": kind, "options": {option: value}}
    response = api.post("/api/studies/", {"name": "s", "pruner": pruner}, format="json")
    assert response.status_code == 400, response.json()
    assert f"pruner.options.{option}" in response.json(), response.json()


def test_every_numeric_option_of_every_sampler_and_pruner_has_a_bound():
    missing = [
        f"{kind}.{name}"
        for kind, cls in {**SAMPLERS, **PRUNERS}.items()
        for name, accepted in json_options(cls).items()
        if (int in accepted or float in accepted) and name not in OPTION_BOUNDS.get(kind, {})
    ]
    assert missing == []


def test_a_sampler_option_that_json_cannot_express_is_refused(api):
    sampler = {"type": "cmaes", "options": {"source_trials": [1, 2]}}
    response = api.post("/api/studies/", {"name": "s", "sampler": sampler}, format="json")
    assert response.status_code == 400
    assert "is not an option" in response.json()["sampler.options.source_trials"][0]


def test_nsga3_reference_points_are_bounded_by_the_number_of_objectives():
    sampler = {"type": "nsga3", "options": {"dividing_parameter": 20}}
    build_sampler(sampler, {}, n_objectives=2)  # 21 reference points
    with pytest.raises(ConfigError) as raised:
        build_sampler(sampler, {}, n_objectives=8)  # C(27, 20) = 888,030
    assert raised.value.field == "sampler.options.dividing_parameter"
    assert "888,030 reference points" in raised.value.message


def test_a_study_stored_before_the_limits_answers_its_ask_with_a_400(api, alice):
    sampler = {"type": "tpe", "options": {"n_ei_candidates": 20_000_000}, "seed": None}
    study = make_study(alice, objective="", sampler=sampler)
    response = api.post(f"/api/studies/{study.pk}/ask/", {}, format="json")
    assert response.status_code == 400
    assert "sampler.options.n_ei_candidates" in response.json()
    assert not study.trials.exists()


# Failures


@pytest.mark.parametrize("mode", ["durable", "memory"])
def test_a_job_whose_objective_always_fails_stops_failed_at_the_default_limit(
    transactional_db, alice, fast, mode
):
    study = make_study(alice, objective="always_fails")
    job = do_start_job(study, alice, n_trials=1, mode=mode)
    assert job.max_failed_trials is None and job.failure_limit == 10
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "failed" and job.stop_reason == "max_failed_trials"
    assert study.trials.filter(state=TrialState.FAIL).count() == 10
    assert "max_failed_trials was not set" in job.error
    assert "= 10 failed trials" in job.error
    assert "RuntimeError: the objective always fails" in job.error


def test_the_default_failure_limit_grows_with_n_trials_and_follows_its_setting(db, alice, fast):
    study = make_study(alice)
    assert do_start_job(study, alice, n_trials=100).failure_limit == 200
    assert do_start_job(study, alice, n_trials=100, max_failed_trials=3).failure_limit == 3
    fast.HUB_DEFAULT_MAX_FAILED_TRIALS = 50
    assert do_start_job(study, alice, n_trials=1).failure_limit == 50


# Active jobs per user


def test_a_user_with_the_most_active_jobs_gets_a_429_naming_the_limit(db, alice, bob, settings):
    settings.HUB_MAX_ACTIVE_JOBS_PER_USER = 2
    study = make_study(alice)
    url = f"/api/studies/{study.pk}/jobs/"
    body = {"n_trials": 1_000_000, "concurrency": 8}
    assert [client(alice).post(url, body, format="json").status_code for _ in range(2)] == [202] * 2
    response = client(alice).post(url, body, format="json")
    assert response.status_code == 429
    assert "HUB_MAX_ACTIVE_JOBS_PER_USER is 2" in response.json()["detail"]
    assert Job.objects.count() == 2
    # Another user is not affected; an ended job frees a place.
    own = make_study(bob)
    assert client(bob).post(f"/api/studies/{own.pk}/jobs/", body, format="json").status_code == 202
    Job.objects.filter(created_by=alice).first().cancel()
    assert client(alice).post(url, body, format="json").status_code == 202


def test_staff_are_held_to_the_active_jobs_limit_too(db, staff, settings):
    settings.HUB_MAX_ACTIVE_JOBS_PER_USER = 1
    study = make_study(staff)
    url = f"/api/studies/{study.pk}/jobs/"
    assert client(staff).post(url, {"n_trials": 5}, format="json").status_code == 202
    assert client(staff).post(url, {"n_trials": 5}, format="json").status_code == 429


def test_the_run_form_shows_the_active_jobs_limit(db, client, alice, settings):
    settings.HUB_MAX_ACTIVE_JOBS_PER_USER = 1
    study = make_study(alice)
    do_start_job(study, alice, n_trials=5)
    client.force_login(alice)
    response = client.post(f"/studies/{study.pk}/run/", {"n_trials": "5"})
    assert response.status_code == 429
    assert "HUB_MAX_ACTIVE_JOBS_PER_USER is 1" in response.content.decode()
    assert Job.objects.count() == 1


# Running slots, fair order and why a job waits (slots run in this process)


def test_a_slot_beyond_the_users_running_limit_is_parked_and_woken_when_one_ends(
    transactional_db, alice, shared
):
    shared.HUB_MAX_RUNNING_SLOTS_PER_USER = 1
    running = do_start_job(make_study(alice), alice, n_trials=5)
    waiting = do_start_job(make_study(alice), alice, n_trials=3)
    lease_as_running(running)
    OrmQ.objects.all().delete()
    assert "parked (limit)" in tasks.run_job_slot(waiting.pk, 0)
    assert JobSlot.objects.get(job=waiting).waiting == "limit"
    assert not waiting.trials().exists() and not OrmQ.objects.exists()
    body = client(alice).get(f"/api/jobs/{waiting.pk}/").json()
    assert body["status"] == "queued"
    assert body["waiting_reason"] == "waiting: you have 1 running slot (limit 1)"
    assert tasks.check_jobs() == []  # parked on purpose: not re-queued as a lost task

    JobSlot.objects.filter(job=running).update(token="", heartbeat=None, finished=True)
    running.cancel()
    assert tasks.wake_parked() == [f"job {waiting.pk}: woke slot 0 (limit)"]
    assert OrmQ.objects.count() == 1
    tasks.run_job_slot(waiting.pk, 0)
    waiting.refresh_from_db()
    assert waiting.status == "succeeded" and waiting.progress()["complete"] == 3


def test_a_slot_of_a_user_running_more_slots_waits_its_turn(transactional_db, alice, bob, shared):
    mine = do_start_job(make_study(alice), alice, n_trials=5)
    lease_as_running(mine)
    more = do_start_job(make_study(alice), alice, n_trials=2)
    theirs = do_start_job(make_study(bob), bob, n_trials=2)
    # Bob runs nothing and has a slot queued: alice's next slot lets it go first.
    assert "parked (turn)" in tasks.run_job_slot(more.pk, 0)
    reason = client(alice).get(f"/api/jobs/{more.pk}/").json()["waiting_reason"]
    assert reason == "waiting for a free worker, 1 ahead"
    tasks.run_job_slot(theirs.pk, 0)
    assert Job.objects.get(pk=theirs.pk).status == "succeeded"
    # Bob's slot started (and ended): alice's parked slot was queued again.
    slot = JobSlot.objects.get(job=more)
    assert slot.waiting == "" and slot.n_enqueued >= 2


def test_a_running_slot_yields_to_a_user_who_waited_with_two_slots_fewer(db, alice, bob, shared):
    job = do_start_job(make_study(alice), alice, n_trials=10, concurrency=2)
    lease_as_running(job, 0)
    lease_as_running(job, 1)
    theirs = do_start_job(make_study(bob), bob, n_trials=1)
    now = timezone.now()
    assert not fair.should_yield(job, now)  # bob's slot was queued just now
    JobSlot.objects.filter(job=theirs).update(enqueued_at=now - timedelta(seconds=10))
    assert fair.should_yield(job, now)
    lease_as_running(theirs)  # now 2 against 1: no one yields
    assert not fair.should_yield(job, now) and not fair.should_yield(theirs, now)


def test_a_long_delay_parks_the_slot_instead_of_sleeping_in_the_worker(
    transactional_db, alice, fast
):
    study = make_study(alice)
    job = do_start_job(study, alice, n_trials=3, delay=3600)
    started = time.monotonic()
    result = tasks.run_job_slot(job.pk, 0)
    assert time.monotonic() - started < 30 and "parked until" in result
    assert study.trials.count() == 1  # the first trial starts at once
    slot = JobSlot.objects.get(job=job)
    assert slot.waiting == "delay" and slot.token == ""
    assert slot.start_at > timezone.now() + timedelta(seconds=3500)
    tasks.check_jobs()
    body = client(alice).get(f"/api/jobs/{job.pk}/").json()
    assert body["status"] == "queued"
    expected = timezone.localtime(slot.start_at).strftime("%H:%M:%S")
    assert body["waiting_reason"] == f"next trial at {expected} (delay)"

    # Its time has come: the watchdog queues it again, and the next trial runs.
    JobSlot.objects.filter(job=job).update(start_at=timezone.now())
    OrmQ.objects.all().delete()
    assert f"job {job.pk}: woke slot 0 (delay)" in tasks.check_jobs()
    assert OrmQ.objects.count() == 1
    assert "parked until" in tasks.run_job_slot(job.pk, 0)
    assert study.trials.count() == 2


def test_the_study_page_says_why_a_job_waits(db, client, alice, bob):
    do_start_job(make_study(bob), bob, n_trials=5)
    study = make_study(alice)
    do_start_job(study, alice, n_trials=5)
    client.force_login(bob)  # anyone signed in sees it
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert "Waiting for a free worker, 1 ahead" in page


# Live: a real server and real workers


def session_for(user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token_for(user)}"
    return session


def assert_responsive(base: str, session: requests.Session) -> None:
    """Another user's request still answers, and fast."""
    started = time.monotonic()
    response = session.get(f"{base}/api/studies/", timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_requests_that_would_exhaust_the_server_are_4xx_and_it_stays_responsive(
    hub_server, alice, bob
):
    hostile, other = session_for(alice), session_for(bob)
    attacks = [
        ({"sampler": {"type": "grid", "options": {"search_space": GRID_5_POW_20}}}, "sampler."),
        ({"sampler": {"type": "grid"}, "search_space": {"a": INT_3000, "b": INT_3000}}, "sampler."),
        ({"sampler": {"type": "tpe", "options": {"n_ei_candidates": 20_000_000}}}, "sampler."),
        ({"sampler": {"type": "nsga2", "options": {"population_size": 10**7}}}, "sampler."),
        ({"sampler": {"type": "cmaes", "options": {"popsize": 10**7}}}, "sampler."),
    ]
    for i, (body, field) in enumerate(attacks):
        response = hostile.post(f"{hub_server}/api/studies/", json={"name": f"a{i}", **body})
        assert response.status_code == 400, response.text
        assert any(key.startswith(field) for key in response.json()), response.json()
        assert_responsive(hub_server, other)
    assert not Study.objects.exists()

    # The 15 jobs of 10**6 trials at concurrency 8: the default limit is 10.
    study = make_study(alice)
    url = f"{hub_server}/api/studies/{study.pk}/jobs/"
    codes = [
        hostile.post(url, json={"n_trials": 10**6, "concurrency": 8}, timeout=30).status_code
        for _ in range(15)
    ]
    assert codes == [202] * 10 + [429] * 5
    response = hostile.post(url, json={"n_trials": 1})
    assert "HUB_MAX_ACTIVE_JOBS_PER_USER is 10" in response.json()["detail"]
    assert_responsive(hub_server, other)


CLUSTER_ENV = {**WORKER_ENV, "HUB_WORKERS": "2"}


@pytest.mark.slow
def test_a_delay_job_holds_no_worker_so_another_users_job_finishes(start_qcluster, alice, bob):
    start_qcluster(**CLUSTER_ENV)
    sleeper = post_job(alice, make_study(alice), n_trials=5, concurrency=2, delay=86400)

    def parked() -> bool:
        slots = JobSlot.objects.filter(job=sleeper)
        return all(s.waiting == "delay" and not s.token for s in slots)

    wait_for(parked, 60, "both slots of the delay job to park")
    other = finished(post_job(bob, make_study(bob), n_trials=1), timeout=60)
    assert other.status == "succeeded", other.error
    sleeper.refresh_from_db()
    assert sleeper.is_active and sleeper.trials().count() == 1
    body = client(alice).get(f"/api/jobs/{sleeper.pk}/").json()
    assert body["waiting_reason"].startswith("next trial at ")


@pytest.mark.slow
def test_an_always_failing_job_on_real_workers_ends_failed_saying_why(start_qcluster, alice):
    start_qcluster(**CLUSTER_ENV)
    CommandObjective.objects.create(
        name="crashes",
        argv=[sys.executable, "-c", "import sys; sys.exit('no GPU')"],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    job = finished(post_job(alice, make_study(alice, objective="crashes"), n_trials=1))
    assert job.status == "failed" and job.stop_reason == "max_failed_trials"
    assert "max_failed_trials was not set" in job.error
    assert job.study.trials.count() == 10


@pytest.mark.slow
def test_the_running_slot_limit_holds_on_real_workers(start_qcluster, alice, bob):
    start_qcluster(**CLUSTER_ENV, HUB_MAX_RUNNING_SLOTS_PER_USER="1")
    mine = post_job(alice, make_study(alice, objective=sleepy(0.3)), n_trials=8, concurrency=2)
    theirs = post_job(bob, make_study(bob, objective=sleepy(0.3)), n_trials=2)
    theirs, mine = finished(theirs), finished(mine, timeout=120)
    assert mine.status == theirs.status == "succeeded", (mine.error, theirs.error)
    assert peak_running(list(mine.trials())) == 1  # never both of alice's slots at once
    # Bob's job got the second worker rather than waiting for alice's to end.
    assert theirs.finished_at < mine.finished_at


@pytest.mark.slow
def test_a_long_job_yields_a_worker_to_another_users_job(start_qcluster, alice, bob):
    start_qcluster(**CLUSTER_ENV)
    long = post_job(alice, make_study(alice, objective=sleepy(0.3)), n_trials=200, concurrency=2)

    def both_running() -> bool:
        return JobSlot.objects.filter(job=long).exclude(token="").count() == 2

    wait_for(both_running, 60, "alice's job to take both workers")
    short = finished(post_job(bob, make_study(bob, objective=sleepy(0.3)), n_trials=2), 60)
    assert short.status == "succeeded", short.error
    long.refresh_from_db()
    assert long.is_active  # bob did not wait for alice's 200 trials
    long.cancel()
