"""The storage a job's trials are written through: it claims each new trial for the job."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from studies.jobs.base import CLAIMED, MAX_TRIAL_RETRIES, JobFull, grace_period, worker_name
from studies.models import Job, JobTrial, Trial
from studies.storage import DjangoStorage
from studies.storage.codec import TRIAL_TABLE

JOB_TABLE = Job._meta.db_table
JOB_TRIAL_TABLE = JobTrial._meta.db_table


class JobStorage(DjangoStorage):
    """DjangoStorage that starts a trial only if the job may still have one.

    The check and the insert happen in one transaction holding the job's row,
    so concurrent workers never start more than n_trials counted trials. The
    statements are plain SQL: they run once per trial.

    Trial heartbeats: with ``beats_elsewhere``, the slot's own heartbeat thread
    writes the heartbeats of this storage's running trials (``beat_running_trials``)
    instead of Optuna starting a thread per trial.
    """

    def __init__(self, job_id: int, slot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.slot = slot
        self.worker = worker_name()
        self.beats_elsewhere = False
        self._running: set[int] = set()
        self._last_stale_check = 0.0

    def _claim(self) -> list[dict[str, Any]]:
        """Lock the job's row; raise JobFull unless it may start a trial. Returns retries."""
        found = self._rows(
            f"SELECT status, n_trials, retry_params FROM {JOB_TABLE} "
            f"WHERE id = %s{self._for_update()}",
            [self.job_id],
        )
        if not found:
            raise JobFull(f"job {self.job_id} was deleted")
        status, n_trials, retry_params = found[0]
        if status not in Job.ACTIVE:
            raise JobFull(f"job {self.job_id} is {status}")
        ((claimed,),) = self._rows(
            f"SELECT COUNT(*) FROM {JOB_TRIAL_TABLE} j JOIN {TRIAL_TABLE} t ON t.id = j.trial_id "
            "WHERE j.job_id = %s AND t.state IN (%s, %s, %s)",
            [self.job_id, *(int(state) for state in CLAIMED)],
        )
        if claimed >= n_trials:
            raise JobFull(f"job {self.job_id} has claimed all {n_trials} trials")
        return json.loads(retry_params) if retry_params else []

    def _adopt(self, trial_id: int) -> None:
        """Make the trial this job's: heartbeat from now, counted for the job."""
        now = self._adapt_datetime(timezone.now())
        self._execute(f"UPDATE {TRIAL_TABLE} SET heartbeat = %s WHERE id = %s", [now, trial_id])
        self._execute(
            f"INSERT INTO {JOB_TRIAL_TABLE} (job_id, trial_id, slot) VALUES (%s, %s, %s)",
            [self.job_id, trial_id, self.slot],
        )
        self._running.add(trial_id)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:
            return super().create_new_trial(study_id, template_trial)
        attrs = {"hub_job_id": self.job_id, "hub_worker": self.worker}
        with transaction.atomic(using=self.using):
            retries = self._claim()
            if retries:
                # Re-run a trial whose worker died, with the same parameters.
                template = retry_template(retries[0], attrs)
                self._execute(
                    f"UPDATE {JOB_TABLE} SET retry_params = %s WHERE id = %s",
                    [json.dumps(retries[1:]), self.job_id],
                )
            else:
                template = new_trial_template(attrs)
            trial_id = super().create_new_trial(study_id, template)
            self._adopt(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state != TrialState.RUNNING:
            if state.is_finished():
                self._running.discard(trial_id)
            return super().set_trial_state_values(trial_id, state, values)
        # Popping a waiting (enqueued) trial: it becomes one of this job's trials.
        with transaction.atomic(using=self.using):
            owner = JobTrial.objects.filter(trial_id=trial_id).values_list("job_id", flat=True)
            owner_id = owner.first()
            if owner_id is not None and owner_id != self.job_id:
                return False  # another job's trial
            try:
                self._claim()
            except JobFull:
                return False
            if not super().set_trial_state_values(trial_id, state, values):
                return False
            if owner_id is None:
                self._adopt(trial_id)
                attrs = {"hub_job_id": self.job_id, "hub_worker": self.worker}
                for key, value in attrs.items():
                    super().set_trial_system_attr(trial_id, key, value)
        return True

    def get_heartbeat_interval(self) -> int | None:
        # Beating elsewhere, Optuna need not start a heartbeat thread per trial
        # (starting one costs more than a cheap trial); stale trials are then
        # failed by fail_stale, which the job's runner calls.
        return None if self.beats_elsewhere else self.heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)
        if threading.current_thread() is not threading.main_thread():
            connections[self.using].close()  # not one left behind per trial thread

    def beat_running_trials(self) -> None:
        running = list(self._running)
        if running:
            Trial.objects.filter(pk__in=running, state=TrialState.RUNNING).update(
                heartbeat=timezone.now()
            )

    def fail_stale(self, study_id: int) -> None:
        """Fail (and queue to re-run) the study's trials whose worker died.

        Asked before every trial; a heartbeat only goes stale after the grace
        period, so once per heartbeat interval is often enough. Each trial is
        failed with its re-run in one transaction; Optuna's own loop (fail, then
        call back) would leave a gap between the two.
        """
        now = time.monotonic()
        assert self.heartbeat_interval is not None
        if now - self._last_stale_check < self.heartbeat_interval:
            return
        self._last_stale_check = now
        stale = timezone.now() - timedelta(seconds=self.grace_period or grace_period())
        for trial_id in self._get_stale_trial_ids(study_id):
            fail_stale_trial(self, trial_id, stale)


def new_trial_template(system_attrs: dict[str, Any]) -> FrozenTrial:
    return FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=-1,
    )


def retry_template(retry: dict[str, Any], system_attrs: dict[str, Any]) -> FrozenTrial:
    template = new_trial_template(
        {**system_attrs, "hub_retry_of": retry["number"], "hub_retries": retry["retries"]}
    )
    template.distributions = {
        name: json_to_distribution(d) for name, d in retry["distributions"].items()
    }
    template.params = dict(retry["params"])
    return template


DIED = "its worker stopped sending heartbeats (the process died or hung)"


def _update_system_attrs(trial_id: int, **attrs: Any) -> None:
    # The trial is finished, which Optuna's storage API forbids changing; these
    # attributes only explain what happened to it.
    with transaction.atomic():
        found = Trial.objects.select_for_update().filter(pk=trial_id).values_list("system_attrs")
        row = found.first()
        if row is not None:
            Trial.objects.filter(pk=trial_id).update(system_attrs={**row[0], **attrs})


def fail_stale_trial(
    storage: DjangoStorage, trial_id: int, stale: datetime | None, message: str = DIED
) -> bool:
    """Fail a trial whose heartbeat stopped and queue it to run again, atomically.

    ``stale``: only if its heartbeat is older (None: its worker is known to be
    gone). False if another process failed (or finished) it first. The FAIL and the
    job's note to re-run it commit together, so a dead worker's trial is never
    failed without being re-run, and the lock order (job, then trial) is the
    same as when a trial is claimed.
    """
    job_id = JobTrial.objects.filter(trial_id=trial_id).values_list("job_id", flat=True).first()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first() if job_id else None
        still = Trial.objects.filter(pk=trial_id, state=TrialState.RUNNING)
        if stale is not None:
            still = still.filter(heartbeat__lt=stale)
        if not still.exists():
            return False  # finished, or its worker was only slow
        try:
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False
        trial = storage.get_trial(trial_id)
        retries = int(trial.system_attrs.get("hub_retries", 0))
        if job is None or not job.is_active:
            _update_system_attrs(trial_id, hub_error=message, hub_stale=True)
        elif retries >= MAX_TRIAL_RETRIES:
            message += f"; not re-run: its workers died {retries + 1} times"
            _update_system_attrs(trial_id, hub_error=message, hub_stale=True)
        else:
            _update_system_attrs(trial_id, hub_error=message + "; re-run", hub_stale=True)
            retry = {
                "number": trial.number,
                "retries": retries + 1,
                "params": trial.params,
                "distributions": {
                    name: distribution_to_json(d) for name, d in trial.distributions.items()
                },
            }
            Job.objects.filter(pk=job.pk).update(retry_params=[*job.retry_params, retry])
    return True
