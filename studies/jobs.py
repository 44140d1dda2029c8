"""Managed optimization jobs: the hub runs N trials of a study on django-q2 workers.

django-q2 only delivers work. It has no cancel, the ORM broker delivers a task
again when its worker died (after ``Q_CLUSTER["retry"]`` seconds) and the Redis
broker loses it. So the Job row is the truth and every task is idempotent:

- A job of concurrency k has k slots (JobSlot). ``start_job`` enqueues one task
  per slot; a task first leases its slot with a conditional UPDATE and keeps the
  lease by heartbeat, so a duplicate or re-delivered task finds it held and does
  nothing, and a task for a finished job does nothing at all.
- Durable mode: each slot runs ``study.optimize`` on a JobStorage, a DjangoStorage
  whose new trials are claimed for the job: under a lock on the job's row it
  counts the job's RUNNING + COMPLETE + PRUNED trials and refuses a trial beyond
  n_trials. Failed trials do not count, so they free their claim. Trials carry
  heartbeats; a trial whose worker died is failed once its heartbeat is older
  than the grace period and re-run with the same parameters.
- Memory mode: each slot runs on Optuna's InMemoryStorage seeded with the
  study's trials and owns a fixed share of n_trials; finished trials are
  written to the database in batches (every few seconds and at the end).
- Cancel is cooperative: ``job.cancel()`` sets the status; each slot checks it
  between trials (a heartbeat thread also watches it, and kills a running
  command objective).
- The watchdog (``check_jobs``) runs at the start of every task, every few
  seconds in every running task, once a minute as a django-q2 schedule and from
  ``manage.py hub_watchdog``: it re-enqueues slots whose worker died or whose
  task got lost, and fails a job whose workers keep dying, with the reason.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import optuna
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from studies.models import Job, JobSlot, JobTrial, Study, Trial
from studies.objectives import ObjectiveInfo, RunContext, get_objective
from studies.samplers import build_pruner, build_sampler
from studies.search_space import ConfigError
from studies.storage import DjangoStorage

logger = logging.getLogger(__name__)

MODES = (Job.DURABLE, Job.MEMORY)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MAX_TRIALS = 1_000_000
MAX_DELAY = 86_400
# A trial whose worker died this many times is not re-run again: it probably
# kills its worker (out of memory, a crash in native code).
MAX_TRIAL_RETRIES = 3
WATCHDOG_SCHEDULE = "optuna-hub job watchdog"


def heartbeat_interval() -> int:
    return settings.HUB_HEARTBEAT_INTERVAL


def grace_period() -> int:
    return settings.HUB_HEARTBEAT_GRACE


def max_resumes() -> int:
    # Restarts after workers died, before the job is failed.
    return settings.HUB_MAX_JOB_RESUMES


def flush_interval() -> int:
    return settings.HUB_MEMORY_FLUSH_INTERVAL


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobFull(Exception):
    """The job has claimed all its trials, or has ended: start no new trial."""


class SlotLost(Exception):
    """Another task took this slot over (this one was thought dead)."""


# Starting jobs


def _integer(field: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(field, "must be an integer")
    if value < low:
        raise ConfigError(field, f"must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(field, f"must be at most {high}")
    return value


def _seconds(field: str, value: Any, *, positive: bool, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(field, "must be a number of seconds")
    if positive and value <= 0:
        raise ConfigError(field, "must be greater than 0")
    if value < 0:
        raise ConfigError(field, "must not be negative")
    if value > high:
        raise ConfigError(field, f"must be at most {high:g}")
    return float(value)


def start_job(
    study: Study,
    user: Any,
    *,
    n_trials: Any,
    timeout: Any = None,
    concurrency: Any = 1,
    delay: Any = 0,
    max_failed_trials: Any = None,
    mode: Any = Job.DURABLE,
) -> Job:
    """Validate, record and enqueue a job; return it (status "queued").

    Raises PermissionDenied unless ``user`` may edit the study, and ConfigError
    naming the field for bad input. Nothing is queued when it raises.
    """
    if not study.can_edit(user):
        raise PermissionDenied("Only the study's owner or staff can run jobs on it.")
    n_trials = _integer("n_trials", n_trials, 1, MAX_TRIALS)
    if timeout is not None:
        timeout = _seconds("timeout", timeout, positive=True, high=365 * 86_400)
    limit = settings.HUB_MAX_JOB_CONCURRENCY
    concurrency = _integer("concurrency", concurrency, 1, limit)
    delay = _seconds("delay", delay, positive=False, high=MAX_DELAY)
    if max_failed_trials is not None:
        max_failed_trials = _integer("max_failed_trials", max_failed_trials, 1)
    if mode not in MODES:
        raise ConfigError("mode", "must be durable or memory")
    info = objective_of(study)
    info.validate_for(study.directions, study.search_space)
    # The sampler sees the space the trials sample (a grid needs it).
    build_sampler(study.sampler, info.space_for(study.search_space))
    build_pruner(study.pruner)

    # More slots than trials would only wait.
    n_slots = min(concurrency, n_trials)
    with transaction.atomic():
        job = Job.objects.create(
            study=study,
            created_by=user if getattr(user, "pk", None) else None,
            objective=study.objective,
            mode=mode,
            n_trials=n_trials,
            timeout=timeout,
            concurrency=concurrency,
            delay=delay,
            max_failed_trials=max_failed_trials,
        )
        JobSlot.objects.bulk_create(
            JobSlot(job=job, index=i, quota=n_trials // n_slots + (i < n_trials % n_slots))
            for i in range(n_slots)
        )
        transaction.on_commit(lambda: enqueue_slots(job.pk))
    ensure_watchdog_schedule()
    return job


def objective_of(study: Study) -> ObjectiveInfo:
    if not study.objective:
        raise ConfigError(
            "objective", "the study has no objective: set one before running jobs on it"
        )
    info = get_objective(study.objective)
    if info is None:
        raise ConfigError("objective", f"{study.objective!r} is not a registered objective")
    return info


def optuna_study_for(study: Study, storage: Any) -> optuna.Study:
    """The study on ``storage`` with its sampler built for the space trials sample."""
    space = objective_of(study).space_for(study.search_space)
    return optuna.Study(
        study_name=study.name,
        storage=storage,
        sampler=build_sampler(study.sampler, space),
        pruner=build_pruner(study.pruner),
    )


def enqueue_slots(job_id: int, indexes: list[int] | None = None) -> None:
    from django_q.tasks import async_task

    slots = JobSlot.objects.filter(job_id=job_id, finished=False)
    if indexes is not None:
        slots = slots.filter(index__in=indexes)
    for index in slots.values_list("index", flat=True):
        JobSlot.objects.filter(job_id=job_id, index=index).update(
            enqueued_at=timezone.now(), n_enqueued=F("n_enqueued") + 1
        )
        async_task(
            "studies.jobs.run_job_slot",
            job_id,
            index,
            task_name=f"job-{job_id}-slot-{index}",
            group=f"job-{job_id}",
        )


def retry_job(job: Job) -> bool:
    """Run a failed or cancelled job (or one stopped by its timeout) again.

    Its trials so far keep counting toward n_trials; the timeout starts over.
    """
    retryable = Q(status__in=[Job.FAILED, Job.CANCELLED]) | Q(
        status=Job.SUCCEEDED, stop_reason="timeout"
    )
    with transaction.atomic():
        updated = Job.objects.filter(retryable, pk=job.pk).update(
            status=Job.QUEUED,
            stop_reason="",
            error="",
            started_at=None,
            finished_at=None,
            n_failed=0,
            n_resumes=0,
        )
        if updated:
            JobSlot.objects.filter(job_id=job.pk).update(finished=False, n_enqueued=0)
            transaction.on_commit(lambda: enqueue_slots(job.pk))
    job.refresh_from_db()
    return bool(updated)


def ensure_watchdog_schedule() -> None:
    """The django-q2 schedule that runs check_jobs every minute (created once)."""
    from django_q.models import Schedule

    if not Schedule.objects.filter(name=WATCHDOG_SCHEDULE).exists():
        Schedule.objects.create(
            name=WATCHDOG_SCHEDULE,
            func="studies.jobs.check_jobs",
            schedule_type=Schedule.MINUTES,
            minutes=1,
            repeats=-1,
        )


def finish(job_id: int, status: str, reason: str, error: str = "") -> bool:
    """Move an active job to a final status; False if it had already ended."""
    return bool(
        Job.objects.filter(pk=job_id, status__in=Job.ACTIVE).update(
            status=status, stop_reason=reason, error=error[:10_000], finished_at=timezone.now()
        )
    )


def counted_trials(job_id: int, states: tuple[TrialState, ...] = COUNTED) -> int:
    return Trial.objects.filter(job_link__job_id=job_id, state__in=states).count()


# The storage that claims trials for a job


JOB_TABLE = Job._meta.db_table
JOB_TRIAL_TABLE = JobTrial._meta.db_table
TRIAL_TABLE = Trial._meta.db_table


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

    def _sql(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def _claim(self) -> list[dict[str, Any]]:
        """Lock the job's row; raise JobFull unless it may start a trial. Returns retries."""
        lock = " FOR UPDATE" if connections[self.using].features.has_select_for_update else ""
        (status, n_trials, retry_params), *_ = self._sql(
            f"SELECT status, n_trials, retry_params FROM {JOB_TABLE} WHERE id = %s{lock}",
            [self.job_id],
        )
        if status not in Job.ACTIVE:
            raise JobFull(f"job {self.job_id} is {status}")
        ((claimed,),) = self._sql(
            f"SELECT COUNT(*) FROM {JOB_TRIAL_TABLE} j JOIN {TRIAL_TABLE} t ON t.id = j.trial_id "
            "WHERE j.job_id = %s AND t.state IN (%s, %s, %s)",
            [self.job_id, *(int(state) for state in CLAIMED)],
        )
        if claimed >= n_trials:
            raise JobFull(f"job {self.job_id} has claimed all {n_trials} trials")
        return json.loads(retry_params) if retry_params else []

    def _adopt(self, trial_id: int) -> None:
        """Make the trial this job's: heartbeat from now, counted for the job."""
        now = connections[self.using].ops.adapt_datetimefield_value(timezone.now())
        self._sql(f"UPDATE {TRIAL_TABLE} SET heartbeat = %s WHERE id = %s", [now, trial_id])
        self._sql(
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
                self._sql(
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
        """Fail (and queue to re-run) the study's trials whose worker died."""
        self._get_stale_trial_ids(study_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Asked before every trial; a heartbeat only goes stale after the
        # grace period, so once per heartbeat interval is often enough.
        now = time.monotonic()
        assert self.heartbeat_interval is not None
        if now - self._last_stale_check < self.heartbeat_interval:
            return []
        self._last_stale_check = now
        # Fail them here, each with its re-run in one transaction; Optuna's own
        # loop (fail, then call back) would leave a gap between the two.
        stale = timezone.now() - timedelta(seconds=self.grace_period or grace_period())
        for trial_id in super()._get_stale_trial_ids(study_id):
            fail_stale_trial(self, trial_id, stale)
        return []


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


def _update_system_attrs(trial_id: int, **attrs: Any) -> None:
    # The trial is finished, which Optuna's storage API forbids changing; these
    # attributes only explain what happened to it.
    with transaction.atomic():
        found = Trial.objects.select_for_update().filter(pk=trial_id).values_list("system_attrs")
        row = found.first()
        if row is not None:
            Trial.objects.filter(pk=trial_id).update(system_attrs={**row[0], **attrs})


def fail_stale_trial(storage: DjangoStorage, trial_id: int, stale: datetime) -> bool:
    """Fail a trial whose heartbeat stopped and queue it to run again, atomically.

    False if another process failed (or finished) it first. The FAIL and the
    job's note to re-run it commit together, so a dead worker's trial is never
    failed without being re-run, and the lock order (job, then trial) is the
    same as when a trial is claimed.
    """
    job_id = JobTrial.objects.filter(trial_id=trial_id).values_list("job_id", flat=True).first()
    message = "its worker stopped sending heartbeats (the process died or hung)"
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first() if job_id else None
        still = Trial.objects.filter(pk=trial_id, state=TrialState.RUNNING, heartbeat__lt=stale)
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


# Running a slot


def run_job_slot(job_id: int, index: int) -> str:
    """The django-q2 task: run one slot of a job until the job is done."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_jobs()
    except DatabaseError:
        logger.exception("watchdog failed")
    runner = SlotRunner.lease(job_id, index)
    if runner is None:
        return f"job {job_id} slot {index}: nothing to do"
    return runner.run()


class SlotRunner:
    def __init__(self, job: Job, slot: JobSlot, token: str) -> None:
        self.job = job
        self.slot = slot
        self.token = token
        self.stop_reason = ""
        self.heartbeat = SlotHeartbeat(self)
        self.started = time.monotonic()
        from django_q.conf import Conf

        # Hand the slot over to a fresh task before django-q2's timeout kills this one.
        self.handoff_after = 0.9 * Conf.TIMEOUT if Conf.TIMEOUT else None
        self.handed_off = False
        # Set by a durable run: writes the heartbeats of its running trials.
        self.beat_trials: Callable[[], None] | None = None

    @classmethod
    def lease(cls, job_id: int, index: int) -> SlotRunner | None:
        job = Job.objects.select_related("study").filter(pk=job_id).first()
        if job is None or not job.is_active:
            return None
        now = timezone.now()
        stale = now - timedelta(seconds=grace_period())
        token = uuid.uuid4().hex
        free = Q(token="") | Q(heartbeat__isnull=True) | Q(heartbeat__lt=stale)
        leased = JobSlot.objects.filter(free, job_id=job_id, index=index, finished=False).update(
            token=token, heartbeat=now, n_starts=F("n_starts") + 1
        )
        if not leased:
            return None
        # started_at stays from the first start: the timeout counts from there.
        Job.objects.filter(pk=job_id, status=Job.QUEUED).update(
            status=Job.RUNNING, started_at=Coalesce("started_at", Value(now)), heartbeat=now
        )
        job.refresh_from_db()
        slot = JobSlot.objects.get(job_id=job_id, index=index)
        return cls(job, slot, token)

    # Stopping

    def should_stop(self) -> bool:
        return self.heartbeat.stopped.is_set()

    def deadline_passed(self) -> bool:
        job = self.job
        if job.timeout is None or job.started_at is None:
            return False
        return timezone.now() >= job.started_at + timedelta(seconds=job.timeout)

    def remaining(self) -> float | None:
        job = self.job
        if job.timeout is None or job.started_at is None:
            return None
        return max(0.0, (job.started_at - timezone.now()).total_seconds() + job.timeout)

    def check_status(self) -> bool:
        """Re-read the job's status; True while it is active."""
        with connections["default"].cursor() as cursor:  # once per trial: plain SQL
            cursor.execute(f"SELECT status FROM {JOB_TABLE} WHERE id = %s", [self.job.pk])
            row = cursor.fetchone()
        if row is None or row[0] not in Job.ACTIVE:
            self.heartbeat.stopped.set()
            return False
        return True

    def ready_for_next_trial(self, on_deadline: Callable[[], None] | None = None) -> bool:
        """After a trial: False when the slot stops (timeout, hand-off, or the job ended
        while waiting out its delay)."""
        if self.deadline_passed():
            if on_deadline is not None:
                on_deadline()
            return False
        if self.time_to_hand_off():
            self.handed_off = True
            return False
        return self.wait_for_start()

    def time_to_hand_off(self) -> bool:
        if self.handoff_after is None:
            return False
        return time.monotonic() - self.started > self.handoff_after

    def wait_for_start(self) -> bool:
        """Honour the job's delay between trial starts; False if the job stopped meanwhile."""
        if not self.job.delay:
            return True
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=self.job.pk)
            now = timezone.now()
            start = max(now, job.next_start_at or now)
            Job.objects.filter(pk=job.pk).update(next_start_at=start + timedelta(seconds=job.delay))
        while (wait := (start - timezone.now()).total_seconds()) > 0:
            if self.should_stop():
                return False
            time.sleep(min(wait, 0.25))
        return not self.should_stop()

    def after_failure(self, trial: FrozenTrial, failures: int) -> bool:
        """Count objective failures; fail the job at max_failed_trials. False to stop."""
        job = self.job
        Job.objects.filter(pk=job.pk).update(n_failed=F("n_failed") + failures)
        n_failed = Job.objects.filter(pk=job.pk).values_list("n_failed", flat=True).first() or 0
        if job.max_failed_trials is not None and n_failed >= job.max_failed_trials:
            error = trial.system_attrs.get("hub_error", "unknown error")
            finish(
                job.pk,
                Job.FAILED,
                "max_failed_trials",
                f"{n_failed} trials failed (max_failed_trials is {job.max_failed_trials}); "
                f"the last, trial {trial.number}, failed with: {error}",
            )
            self.heartbeat.stopped.set()
            return False
        return True

    def objective(self) -> Callable[[optuna.Trial], Any]:
        info = objective_of(self.job.study)
        context = RunContext(job_id=self.job.pk, should_stop=self.should_stop)
        inner = info.make_objective(self.job.study.search_space, context)

        def objective(trial: optuna.Trial) -> Any:
            try:
                return inner(trial)
            except optuna.TrialPruned:
                raise
            except Exception as e:
                from studies.objectives.command import TrialStopped

                attrs: dict[str, Any] = {"hub_error": f"{type(e).__name__}: {e}"[:2000]}
                if isinstance(e, TrialStopped):
                    attrs["hub_stopped"] = True
                for key, value in attrs.items():
                    trial.storage.set_trial_system_attr(trial._trial_id, key, value)
                raise

        return objective

    # The run

    def run(self) -> str:
        self.heartbeat.start()
        try:
            if self.job.mode == Job.MEMORY:
                MemoryRun(self).run()
            else:
                DurableRun(self).run()
        except (OperationalError, InterfaceError) as e:
            # Most likely passing (a lost connection, a locked database): give
            # the slot back; the watchdog starts it again.
            logger.exception("job %s slot %s: database error", self.job.pk, self.slot.index)
            self.release()
            return f"job {self.job.pk} slot {self.slot.index}: released after {e}"
        except SlotLost:
            return f"job {self.job.pk} slot {self.slot.index}: taken over by another task"
        except Exception as e:
            logger.exception("job %s slot %s failed", self.job.pk, self.slot.index)
            summary = "".join(traceback.format_exception_only(type(e), e)).strip()
            finish(self.job.pk, Job.FAILED, "error", f"slot {self.slot.index}: {summary}")
            self.release(finished=True)
            return f"job {self.job.pk} slot {self.slot.index}: failed: {summary}"
        finally:
            self.heartbeat.stop()
        if self.handed_off:
            self.release()
            enqueue_slots(self.job.pk, [self.slot.index])
            return f"job {self.job.pk} slot {self.slot.index}: handed over to a new task"
        self.release(finished=True)
        return f"job {self.job.pk} slot {self.slot.index}: done ({self.stop_reason})"

    def release(self, finished: bool = False) -> None:
        JobSlot.objects.filter(pk=self.slot.pk, token=self.token).update(
            token="", heartbeat=None, finished=finished
        )

    def finish_if_done(self) -> bool:
        """Mark the job succeeded when it has all its trials; True when it has."""
        if counted_trials(self.job.pk) >= self.job.n_trials:
            finish(self.job.pk, Job.SUCCEEDED, "n_trials")
            self.stop_reason = "n_trials"
            return True
        return False


class SlotHeartbeat(threading.Thread):
    """Keeps the slot's lease, watches the job's status, and watches other jobs."""

    def __init__(self, runner: SlotRunner) -> None:
        super().__init__(name=f"job-{runner.job.pk}-slot-{runner.slot.index}", daemon=True)
        self.runner = runner
        self.stopped = threading.Event()  # the job ended, or the lease was lost
        self.lost = threading.Event()
        self.done = threading.Event()
        self.last_watch = time.monotonic()

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(timeout=10)

    def run(self) -> None:
        try:
            while not self.done.wait(heartbeat_interval()):
                try:
                    self.beat()
                except DatabaseError:
                    logger.exception("heartbeat failed")
        finally:
            connections.close_all()

    def beat(self) -> None:
        runner = self.runner
        now = timezone.now()
        kept = JobSlot.objects.filter(pk=runner.slot.pk, token=runner.token).update(heartbeat=now)
        if not kept:
            self.lost.set()
            self.stopped.set()
            return
        if runner.beat_trials is not None:
            runner.beat_trials()
        Job.objects.filter(pk=runner.job.pk).update(heartbeat=now)
        runner.check_status()
        if time.monotonic() - self.last_watch >= grace_period():
            self.last_watch = time.monotonic()
            check_jobs()


class DurableRun:
    """Every trial is written as it happens; concurrent slots share the database."""

    def __init__(self, runner: SlotRunner) -> None:
        self.runner = runner
        job = runner.job
        self.storage = JobStorage(
            job.pk,
            runner.slot.index,
            heartbeat_interval=heartbeat_interval(),
            grace_period=grace_period(),
        )
        self.storage.beats_elsewhere = True
        runner.beat_trials = self.storage.beat_running_trials
        self.study = optuna_study_for(job.study, self.storage)
        if runner.slot.index > 0 or runner.slot.n_starts > 1:
            # Slots of a seeded sampler must not all draw the same parameters.
            self.study.sampler.reseed_rng()

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        runner = self.runner
        self.storage.fail_stale(study._study_id)
        if trial.state == TrialState.FAIL and not trial.system_attrs.get("hub_stopped"):
            if not runner.after_failure(trial, 1):
                study.stop()
                return
        if (
            not runner.check_status()
            or runner.should_stop()
            or not runner.ready_for_next_trial(on_deadline=self.stop_for_timeout)
        ):
            study.stop()

    def stop_for_timeout(self) -> None:
        finish(self.runner.job.pk, Job.SUCCEEDED, "timeout")
        self.runner.stop_reason = "timeout"

    def run(self) -> None:
        runner = self.runner
        objective = runner.objective()
        # Trials a dead worker left running: fail them now and re-run them first.
        self.storage.fail_stale(self.study._study_id)
        if not runner.wait_for_start():
            return
        while not runner.should_stop() and not runner.handed_off:
            if runner.heartbeat.lost.is_set():
                raise SlotLost()
            if runner.deadline_passed():
                self.stop_for_timeout()
                return
            try:
                self.study.optimize(
                    objective,
                    timeout=runner.remaining(),
                    catch=(Exception,),
                    callbacks=[self.after_trial],
                )
            except JobFull:
                if not self.wait_for_claim():
                    return
                continue
            if runner.deadline_passed():
                self.stop_for_timeout()
                return
        if runner.heartbeat.lost.is_set():
            raise SlotLost()
        runner.stop_reason = runner.stop_reason or "stopped"

    def wait_for_claim(self) -> bool:
        """All trials are claimed: wait until one frees up (True) or the job is done."""
        runner = self.runner
        while not runner.should_stop():
            if runner.finish_if_done():
                return False
            if not runner.check_status():
                return False
            if runner.deadline_passed():
                self.stop_for_timeout()
                return False
            # A sibling's worker may have died with trials running.
            self.storage.fail_stale(self.study._study_id)
            job = Job.objects.get(pk=runner.job.pk)
            if job.retry_params or counted_trials(job.pk, CLAIMED) < job.n_trials:
                return True
            time.sleep(0.5)
        return False


class MemoryRun:
    """Trials run on InMemoryStorage and reach the database in batches.

    Each slot owns a share (quota) of n_trials. A batch is written in one
    transaction that also checks the slot's lease and never writes more counted
    trials than the quota, so the total is exact even if a slot is taken over.
    Trials not yet written when a worker dies are lost and run again.
    """

    def __init__(self, runner: SlotRunner) -> None:
        self.runner = runner
        job = runner.job
        self.db = DjangoStorage()
        self.study_id = job.study_id
        self.memory = optuna.storages.InMemoryStorage()
        directions = [optuna.study.StudyDirection[d.upper()] for d in job.study.directions]
        self.memory_study_id = self.memory.create_new_study(directions, job.study.name)
        self.study = optuna_study_for(job.study, self.memory)
        if runner.slot.index > 0 or runner.slot.n_starts > 1:
            self.study.sampler.reseed_rng()
        self.seen: set[int] = set()  # database trial ids already in memory
        self.pending: list[FrozenTrial] = []
        self.pending_failures = 0
        self.written = self.db_done()
        self.local_done = 0
        self.last_flush = time.monotonic()
        self.pull()

    def db_done(self) -> int:
        runner = self.runner
        return Trial.objects.filter(
            job_link__job_id=runner.job.pk, job_link__slot=runner.slot.index, state__in=COUNTED
        ).count()

    def pull(self) -> None:
        """Copy finished trials from the database (other slots, other clients) into memory."""
        for trial in self.db.get_all_trials(self.study_id, deepcopy=False, states=FINISHED):
            if trial._trial_id not in self.seen:
                self.seen.add(trial._trial_id)
                self.memory.create_new_trial(self.memory_study_id, template_trial=trial)

    def flush(self) -> None:
        runner = self.runner
        self.last_flush = time.monotonic()
        if not self.pending:
            self.pull()
            return
        job = runner.job
        with transaction.atomic():
            slot = JobSlot.objects.select_for_update().get(pk=runner.slot.pk)
            if slot.token != runner.token:
                self.pending.clear()
                raise SlotLost()
            room = slot.quota - self.db_done()
            links = []
            for trial in self.pending:
                if trial.state in COUNTED:
                    if room <= 0:
                        continue
                    room -= 1
                row = copy.copy(trial)
                row.system_attrs = {
                    **trial.system_attrs,
                    "hub_job_id": job.pk,
                    "hub_worker": worker_name(),
                }
                trial_id = self.db.create_new_trial(self.study_id, template_trial=row)
                links.append(JobTrial(job_id=job.pk, trial_id=trial_id, slot=slot.index))
                self.seen.add(trial_id)
            JobTrial.objects.bulk_create(links)
            if self.pending_failures:
                Job.objects.filter(pk=job.pk).update(n_failed=F("n_failed") + self.pending_failures)
        self.pending.clear()
        self.pending_failures = 0
        self.written = self.db_done()
        self.local_done = 0
        self.pull()

    def quota_reached(self) -> bool:
        return self.written + self.local_done >= self.runner.slot.quota

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        runner = self.runner
        job = runner.job
        self.pending.append(trial)
        if trial.state in COUNTED:
            self.local_done += 1
        elif trial.state == TrialState.FAIL and not trial.system_attrs.get("hub_stopped"):
            self.pending_failures += 1
            if job.max_failed_trials is not None:
                known = job.n_failed + self.pending_failures
                if known >= job.max_failed_trials:
                    self.flush()
                    if not runner.after_failure(trial, 0):
                        study.stop()
                        return
                    job.refresh_from_db(fields=["n_failed"])
        if self.quota_reached() or runner.should_stop() or not runner.ready_for_next_trial():
            study.stop()
        if time.monotonic() - self.last_flush >= flush_interval():
            self.flush()

    def run(self) -> None:
        runner = self.runner
        objective = runner.objective()
        try:
            if not self.quota_reached() and runner.wait_for_start():
                while not (self.quota_reached() or runner.should_stop() or runner.handed_off):
                    if runner.deadline_passed():
                        break
                    self.study.optimize(
                        objective,
                        timeout=runner.remaining(),
                        catch=(Exception,),
                        callbacks=[self.after_trial],
                    )
        finally:
            if not runner.heartbeat.lost.is_set():
                self.flush()
        if runner.heartbeat.lost.is_set():
            raise SlotLost()
        if runner.deadline_passed() and finish(runner.job.pk, Job.SUCCEEDED, "timeout"):
            runner.stop_reason = "timeout"
            return
        if self.quota_reached():
            # This slot is done; the job is done when every slot is.
            runner.stop_reason = "quota"
            runner.release(finished=True)
            runner.finish_if_done()


# The watchdog


def check_jobs() -> list[str]:
    """Restart slots whose worker died or whose task got lost; fail hopeless jobs.

    Safe to run anywhere and any number of times at once: every change is a
    conditional UPDATE that only one caller wins.
    """
    actions: list[str] = []
    now = timezone.now()
    grace = grace_period()
    stale = now - timedelta(seconds=grace)
    actions += fail_stale_job_trials(stale)
    for job in Job.objects.active().select_related("study"):
        slots = list(job.slots.all())
        if slots and all(slot.finished for slot in slots):
            # Every slot ended but nobody closed the job (a crash in between).
            if counted_trials(job.pk) >= job.n_trials:
                if finish(job.pk, Job.SUCCEEDED, "n_trials"):
                    actions.append(f"job {job.pk}: succeeded (closed by the watchdog)")
                continue
            JobSlot.objects.filter(job=job).update(finished=False)
            slots = list(job.slots.all())
        restart: list[int] = []
        for slot in slots:
            if slot.finished or (slot.token and slot.heartbeat and slot.heartbeat >= stale):
                continue
            if slot.token:
                # Leased, but its worker stopped heartbeating: it died.
                took = JobSlot.objects.filter(
                    pk=slot.pk, token=slot.token, heartbeat=slot.heartbeat
                ).update(token="", heartbeat=None)
                if not took:
                    continue
                n = job.n_resumes + 1
                Job.objects.filter(pk=job.pk).update(n_resumes=F("n_resumes") + 1)
                seen = slot.heartbeat.isoformat() if slot.heartbeat else "never"
                if n > max_resumes():
                    reason = (
                        f"its workers died {n} times (slot {slot.index} last heartbeat {seen}); "
                        f"giving up after {max_resumes()} restarts"
                    )
                    if finish(job.pk, Job.FAILED, "workers_died", reason):
                        actions.append(f"job {job.pk}: failed: {reason}")
                    restart = []
                    break
                Job.objects.filter(pk=job.pk).update(
                    error=f"restarted slot {slot.index}: its worker stopped heartbeating "
                    f"(last heartbeat {seen})"
                )
                restart.append(slot.index)
            else:
                # Never started, or handed back: its task may be lost or stuck
                # in a busy worker's queue. Re-enqueue, backing off.
                wait = grace * 2 ** min(max(slot.n_enqueued - 1, 0), 6)
                if slot.enqueued_at and slot.enqueued_at > now - timedelta(seconds=wait):
                    continue
                took = JobSlot.objects.filter(pk=slot.pk, enqueued_at=slot.enqueued_at).update(
                    enqueued_at=now
                )
                if took:
                    restart.append(slot.index)
        if restart:
            enqueue_slots(job.pk, restart)
            actions.append(f"job {job.pk}: enqueued slots {restart}")
        live = JobSlot.objects.filter(job=job, finished=False, heartbeat__gte=stale).exclude(
            token=""
        )
        if not live.exists():
            # No worker runs it (any more): it waits for one, and says so.
            Job.objects.filter(pk=job.pk, status=Job.RUNNING).update(status=Job.QUEUED)
    return actions


def fail_stale_job_trials(stale: datetime) -> list[str]:
    """Fail job trials whose worker stopped heartbeating; re-run those of active jobs."""
    rows = Trial.objects.filter(
        job_link__isnull=False, state=TrialState.RUNNING, heartbeat__lt=stale
    ).values_list("id", flat=True)
    actions = []
    storage = DjangoStorage()
    for trial_id in rows:
        if fail_stale_trial(storage, trial_id, stale):
            actions.append(f"trial {trial_id}: failed (its worker stopped heartbeating)")
    return actions
