"""Stopping rules: a job ends succeeded when its target is reached or its best stops improving."""

from __future__ import annotations

import optuna
import pytest
from django.urls import reverse
from optuna.trial import TrialState

from studies.actions import do_start_job
from studies.config.errors import ConfigError
from studies.jobs import tasks
from studies.models import Job
from tests.test_jobs import api, make_study, run_slots


def flat(trial: optuna.Trial) -> float:
    """Never improves on its first trial."""
    trial.suggest_float("x", 0, 1)
    return 1.0


def counted(job: Job) -> list:
    return list(
        job.trials().filter(state__in=[TrialState.COMPLETE, TrialState.PRUNED]).order_by("number")
    )


@pytest.fixture
def flat_objective(settings):
    settings.HUB_OBJECTIVES = ["tests.test_job_stopping.flat"]


@pytest.mark.parametrize("mode", ["durable", "memory"])
def test_a_job_stops_succeeded_at_the_first_trial_that_reaches_its_target(db, alice, mode):
    study = make_study(alice, "sphere")
    job = do_start_job(study, alice, n_trials=300, mode=mode, stop_when={"target": 2.0})
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    trials = counted(job)
    reached = [t for t in trials if t.value is not None and t.value <= 2.0]
    assert job.status == "succeeded" and job.stop_reason == "target"
    # Within one trial: the one that reached it is the last the job ran.
    assert reached and reached[0].number == trials[-1].number and len(trials) < 300
    assert job.stop_detail == f"Stopped: target 2 reached at trial #{reached[0].number}"


def test_a_maximized_target_and_one_target_per_objective(db, alice):
    study = make_study(alice, "binh_korn", directions=["minimize", "minimize"])
    job = do_start_job(study, alice, n_trials=300, stop_when={"target": [60, 30]})
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    last = counted(job)[-1]
    assert job.stop_reason == "target" and len(counted(job)) < 300
    assert last.values[0] <= 60 and last.values[1] <= 30
    assert job.stop_detail == f"Stopped: targets [60.0, 30.0] reached at trial #{last.number}"


@pytest.mark.parametrize("mode", ["durable", "memory"])
def test_a_job_stops_when_patience_trials_bring_no_improvement(
    db, alice, flat_objective, settings, mode
):
    # A memory run counts the plateau as it writes a batch: here, after every trial.
    settings.HUB_MEMORY_FLUSH_INTERVAL = 0
    study = make_study(alice, "flat")
    job = do_start_job(study, alice, n_trials=500, mode=mode, stop_when={"patience": 5})
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.stop_reason == "patience", job.error
    # Trial 0 was the best, then 5 without improvement; a memory run notices
    # when it writes, which may be one trial later.
    assert len(counted(job)) in ((6,) if mode == "durable" else (6, 7))
    assert job.stop_detail == "Stopped: no improvement over 5 trials (min_delta 0) since trial #0"


def test_slots_running_at_once_stop_on_the_rule_too(transactional_db, alice):
    study = make_study(alice, "sphere")
    job = do_start_job(study, alice, n_trials=400, concurrency=2, stop_when={"target": 1.0})
    run_slots(job, [0, 1])
    job.refresh_from_db()
    assert job.status == "succeeded" and job.stop_reason == "target"
    assert len(counted(job)) < 400


def test_min_delta_counts_small_gains_as_no_improvement(db, alice):
    study = make_study(alice, "sphere")
    job = do_start_job(study, alice, n_trials=2000, stop_when={"patience": 20, "min_delta": 100.0})
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    # Sphere's values are all within 100 of each other: only the first trial counts.
    assert job.stop_reason == "patience" and len(counted(job)) == 21


@pytest.mark.parametrize(
    ("stop_when", "field", "message"),
    [
        ("soon", "stop_when", "must be an object"),
        ({"when": 1}, "stop_when.when", "is not a stopping rule"),
        ({"target": "low"}, "stop_when.target", "must be finite numbers"),
        ({"target": [1, 2]}, "stop_when.target", "one number per objective (1)"),
        ({"target": "NaN"}, "stop_when.target", "must be finite numbers"),
        ({"patience": 0}, "stop_when.patience", "between 1 and"),
        ({"patience": 2.5}, "stop_when.patience", "must be an integer"),
        ({"patience": 5, "min_delta": -1}, "stop_when.min_delta", "at least 0"),
        ({"min_delta": 1}, "stop_when.min_delta", "needs patience"),
    ],
)
def test_a_bad_stopping_rule_is_a_400_naming_it(db, alice, stop_when, field, message):
    study = make_study(alice, "sphere")
    response = api(alice).post(
        f"/api/studies/{study.pk}/jobs/", {"n_trials": 5, "stop_when": stop_when}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert message in " ".join(response.json()[field])
    assert not Job.objects.exists()


def test_patience_needs_a_single_objective(db, alice):
    study = make_study(alice, "binh_korn", directions=["minimize", "minimize"])
    with pytest.raises(ConfigError) as e:
        do_start_job(study, alice, n_trials=5, stop_when={"patience": 3})
    assert e.value.field == "stop_when.patience"


def test_the_api_shows_the_rule_and_what_stopped_the_job(db, alice):
    study = make_study(alice, "sphere")
    client = api(alice)
    response = client.post(
        f"/api/studies/{study.pk}/jobs/",
        {"n_trials": 200, "stop_when": {"target": 3}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    tasks.run_job_slot(response.json()["id"], 0)
    body = client.get(response.json()["url"]).json()
    assert body["stop_when"] == {"target": [3.0]}
    assert body["status"] == "succeeded" and body["stop_reason"] == "target"
    assert body["stop_detail"].startswith("Stopped: target 3 reached at trial #")


def test_the_run_form_takes_a_target_and_a_patience(client, alice):
    study = make_study(alice, "sphere")
    client.force_login(alice)
    url = reverse("studies:study_run", args=[study.pk])
    response = client.post(url, {"n_trials": "50", "target": "0.5", "patience": "10"})
    assert response.status_code == 302
    job = Job.objects.get(study=study)
    assert job.stop_when == {"target": [0.5], "patience": 10, "min_delta": 0.0}
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    page = client.get(reverse("studies:study", args=[study.pk])).content.decode()
    assert job.stop_detail and job.stop_detail in page


def test_a_bad_target_in_the_run_form_is_shown_beside_it(client, alice):
    study = make_study(alice, "sphere")
    client.force_login(alice)
    url = reverse("studies:study_run", args=[study.pk])
    response = client.post(url, {"n_trials": "5", "target": "low"})
    assert response.status_code == 400
    assert "must be finite numbers" in response.context["run_errors"]["target"]
    response = client.post(url, {"n_trials": "5", "patience": "0"})
    assert "between 1 and" in response.context["run_errors"]["patience"]
    assert not Job.objects.exists()
