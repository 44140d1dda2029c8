"""Deleting a study while a job runs on it: the job stops, no worker fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django_q.models import Task
from optuna.trial import TrialState
from rest_framework.test import APIClient

from studies.models import Job, JobSlot, Study, Trial
from tests.conftest import wait_for
from tests.test_jobs_workers import WORKER_ENV, post_job, sleepy

pytestmark = pytest.mark.slow


def delete_through_api(user, study: Study) -> None:
    client = APIClient()
    client.force_authenticate(user)
    assert client.delete(f"/api/studies/{study.pk}/").status_code == 204


def delete_through_page(user, study: Study) -> None:
    client = Client()
    client.force_login(user)
    response = client.post(reverse("studies:study_delete", args=[study.pk]))
    assert response.status_code == 302


@pytest.mark.parametrize("delete", [delete_through_api, delete_through_page])
def test_deleting_a_study_stops_its_running_job_quietly(
    start_qcluster, alice, tmp_path: Path, delete
):
    log = tmp_path / "qcluster.log"
    marks = tmp_path / "marks"
    marks.mkdir()
    start_qcluster(log=log, **{**WORKER_ENV, "HUB_WORKERS": "2"})
    study = Study.objects.create(
        name="doomed", owner=alice, directions=["minimize"], objective=sleepy(60, marks)
    )
    job = post_job(alice, study, n_trials=10, concurrency=2)
    wait_for(lambda: len(list(marks.glob("*.started"))) == 2, 60, "both trials to start")
    assert study.trials.filter(state=TrialState.RUNNING).count() == 2

    delete(alice, study)

    assert not Study.objects.filter(pk=study.pk).exists()
    assert not Job.objects.filter(pk=job.pk).exists() and not JobSlot.objects.exists()
    # Both slots' tasks end (django-q2 records each), well before a trial's 60 s.
    done = wait_for(
        lambda: len(tasks := list(Task.objects.filter(group=f"job-{job.pk}"))) == 2 and tasks,
        45,
        "both slot tasks to end",
    )
    assert all(task.success for task in done), [task.result for task in done]
    assert not any("failed" in str(task.result) for task in done), [t.result for t in done]
    # Their programs were killed, not left to finish, and nothing was written after.
    assert not list(marks.glob("*.done"))
    assert not Trial.objects.filter(state=TrialState.RUNNING).exists()
    assert not Trial.objects.filter(study_id=study.pk).exists()
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]
