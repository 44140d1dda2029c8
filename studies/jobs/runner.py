"""A slot's run: its lease and heartbeat, the delay, the timeout, hand-off and stopping.

A delay longer than HUB_DELAY_SLEEP_MAX is not slept in the worker: the slot
keeps the start it reserved (``JobSlot.start_at``), is released and parked
DELAY, and the task ends; ``fair.wake_slots`` (run by the watchdog and whenever a
slot starts or stops) queues it again once that time has come.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import optuna
from django.contrib.auth import get_user_model
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.conf import Conf
from optuna.trial import FrozenTrial

from studies.jobs import fair
from studies.jobs.base import (
    SlotLost,
    counted_trials,
    delay_sleep_max,
    finish,
    grace_period,
    heartbeat_interval,
    objective_of,
    worker_name,
)
from studies.jobs.job_storage import JOB_TABLE
from studies.jobs.modes import DurableRun, MemoryRun
from studies.jobs.stopping import rule_met
from studies.models import Job, JobSlot, Team
from studies.objectives.base import RunContext
from studies.objectives.command import TrialStopped

logger = logging.getLogger(__name__)


class SlotRunner:
    """Runs one leased slot of a job until the job is done, stops, or hands the slot over.

    ``watch`` is called every grace period from the heartbeat thread, so every
    running task also watches other jobs (tasks.py passes the watchdog).
    """

    def __init__(
        self, job: Job, slot: JobSlot, token: str, watch: Callable[[], Any] | None = None
    ) -> None:
        self.job = job
        self.slot = slot
        self.token = token
        self.watch = watch
        self.stop_reason = ""
        self.heartbeat = SlotHeartbeat(self)
        self.started = time.monotonic()
        # Hand the slot over to a fresh task before django-q2's timeout kills this one.
        self.handoff_after = 0.9 * Conf.TIMEOUT if Conf.TIMEOUT else None
        self.handed_off = False
        # Set by the heartbeat thread when another user's slot should have the worker.
        self.yield_requested = threading.Event()
        # The reserved start of the next trial, when it is too far off to wait for here.
        self.parked_until: datetime | None = None
        # Set by a durable run: writes the heartbeats of its running trials.
        self.beat_trials: Callable[[], None] | None = None

    @classmethod
    def lease(
        cls, job_id: int, index: int, watch: Callable[[], Any] | None = None
    ) -> SlotRunner | str:
        """The runner of the leased slot, or why the slot does not run now."""
        nothing = f"job {job_id} slot {index}: nothing to do"
        job = Job.objects.select_related("study").filter(pk=job_id).first()
        if job is None or not job.is_active:
            return nothing
        token = uuid.uuid4().hex
        with transaction.atomic():
            if job.created_by_id is not None:
                # One user's slots start one at a time, so the limit holds.
                owner = get_user_model().objects.select_for_update().filter(pk=job.created_by_id)
                list(owner.values_list("pk", flat=True))
            if job.study.team_id is not None:  # and one team's, for the team's limit
                team = Team.objects.select_for_update().filter(pk=job.study.team_id)
                list(team.values_list("pk", flat=True))
            now = timezone.now()
            stale = now - timedelta(seconds=grace_period())
            free = Q(token="") | Q(heartbeat__isnull=True) | Q(heartbeat__lt=stale)
            mine = JobSlot.objects.filter(free, job_id=job_id, index=index, finished=False)
            if not mine.exists():
                return nothing
            verdict = fair.admission(job, now)
            if verdict:
                mine.update(token="", heartbeat=None, waiting=verdict)
                return f"job {job_id} slot {index}: parked ({verdict})"
            leased = mine.update(
                token=token,
                heartbeat=now,
                n_starts=F("n_starts") + 1,
                waiting="",
                n_enqueued=0,
                worker=worker_name(),
            )
        if not leased:
            return nothing
        # started_at stays from the first start: the timeout counts from there.
        Job.objects.filter(pk=job_id, status=Job.QUEUED).update(
            status=Job.RUNNING, started_at=Coalesce("started_at", Value(now)), heartbeat=now
        )
        job.refresh_from_db()
        slot = JobSlot.objects.get(job_id=job_id, index=index)
        return cls(job, slot, token, watch)

    # Stopping

    def should_stop(self) -> bool:
        return self.heartbeat.stopped.is_set()

    def stops_here(self) -> bool:
        """The task's run loop ends: the job stopped, or the slot is handed over or parked."""
        return self.should_stop() or self.handed_off or self.parked_until is not None

    def deadline(self) -> datetime | None:
        job = self.job
        if job.timeout is None or job.started_at is None:
            return None
        return job.started_at + timedelta(seconds=job.timeout)

    def deadline_passed(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and timezone.now() >= deadline

    def remaining(self) -> float | None:
        deadline = self.deadline()
        if deadline is None:
            return None
        return max(0.0, (deadline - timezone.now()).total_seconds())

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
        if self.time_to_hand_off() or self.yield_requested.is_set():
            self.handed_off = True
            return False
        return self.wait_for_start()

    def time_to_hand_off(self) -> bool:
        if self.handoff_after is None:
            return False
        return time.monotonic() - self.started > self.handoff_after

    def wait_for_start(self) -> bool:
        """Honour the job's delay between trial starts; False if this slot stops for now.

        The start is reserved once (kept on the slot while it is parked); a wait
        longer than HUB_DELAY_SLEEP_MAX parks the slot instead of sleeping.
        """
        if not self.job.delay:
            return True
        start = self.slot.start_at or self.reserve_start()
        deadline = self.deadline()
        if deadline is not None and start >= deadline:
            # The next trial could not start before the timeout.
            finish(self.job.pk, Job.SUCCEEDED, "timeout")
            self.stop_reason = "timeout"
            self.heartbeat.stopped.set()
            return False
        if (start - timezone.now()).total_seconds() > delay_sleep_max():
            self.parked_until = start
            return False
        while (wait := (start - timezone.now()).total_seconds()) > 0:
            if self.should_stop():
                return False
            time.sleep(min(wait, 0.25))
        JobSlot.objects.filter(pk=self.slot.pk, token=self.token).update(start_at=None)
        self.slot.start_at = None
        return not self.should_stop()

    def reserve_start(self) -> datetime:
        """The next free start time of the job (starts are ``delay`` apart), kept on the slot."""
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=self.job.pk)
            now = timezone.now()
            start = max(now, job.next_start_at or now)
            Job.objects.filter(pk=job.pk).update(next_start_at=start + timedelta(seconds=job.delay))
            JobSlot.objects.filter(pk=self.slot.pk, token=self.token).update(start_at=start)
        self.slot.start_at = start
        return start

    def after_failure(self, trial: FrozenTrial, failures: int) -> bool:
        """Count objective failures; fail the job at its failure limit. False to stop."""
        job = self.job
        Job.objects.filter(pk=job.pk).update(n_failed=F("n_failed") + failures)
        n_failed = Job.objects.filter(pk=job.pk).values_list("n_failed", flat=True).first() or 0
        if n_failed >= job.failure_limit:
            error = trial.system_attrs.get("hub_error", "unknown error")
            finish(
                job.pk,
                Job.FAILED,
                "max_failed_trials",
                f"{n_failed} trials failed ({failure_rule(job)}); "
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
            if not Job.objects.filter(pk=self.job.pk).exists():
                # The study was deleted under the running trial (its jobs were
                # cancelled first): nothing is left to write to.
                return f"job {self.job.pk} slot {self.slot.index}: its study was deleted"
            if not self.holds_lease():
                # This worker was thought dead (frozen, or cut off) and another took
                # the slot over; what failed here (telling a trial the watchdog had
                # failed) is this worker's, not the job's.
                slot = f"job {self.job.pk} slot {self.slot.index}"
                logger.warning("%s: lost its lease, then failed: %s", slot, e)
                return f"{slot}: taken over by another task"
            logger.exception("job %s slot %s failed", self.job.pk, self.slot.index)
            summary = "".join(traceback.format_exception_only(type(e), e)).strip()
            finish(self.job.pk, Job.FAILED, "error", f"slot {self.slot.index}: {summary}")
            self.release(finished=True)
            return f"job {self.job.pk} slot {self.slot.index}: failed: {summary}"
        finally:
            self.heartbeat.stop()
        if self.parked_until is not None and not (self.handed_off or self.should_stop()):
            self.release(waiting=JobSlot.DELAY)  # fair.wake_slots queues it at its start
            start = self.parked_until.isoformat(timespec="seconds")
            return f"job {self.job.pk} slot {self.slot.index}: parked until {start} (delay)"
        if self.handed_off:
            self.release()  # the caller queues the slot again
            return f"job {self.job.pk} slot {self.slot.index}: handed over to a new task"
        self.release(finished=True)
        return f"job {self.job.pk} slot {self.slot.index}: done ({self.stop_reason})"

    def holds_lease(self) -> bool:
        if self.heartbeat.lost.is_set():
            return False
        return JobSlot.objects.filter(pk=self.slot.pk, token=self.token).exists()

    def release(self, finished: bool = False, waiting: str = "") -> None:
        JobSlot.objects.filter(pk=self.slot.pk, token=self.token).update(
            token="", heartbeat=None, finished=finished, waiting=waiting, worker=""
        )

    def stop_on_rule(self, trial: FrozenTrial | None = None) -> bool:
        """End the job, succeeded, when one of its stopping rules holds; True if one does."""
        rule, detail = rule_met(self.job, trial)
        if not rule:
            return False
        finish(self.job.pk, Job.SUCCEEDED, rule, detail=detail)
        self.stop_reason = rule
        self.heartbeat.stopped.set()
        return True

    def finish_if_done(self) -> bool:
        """Mark the job succeeded when it has all its trials; True when it has."""
        if counted_trials(self.job.pk) >= self.job.n_trials:
            finish(self.job.pk, Job.SUCCEEDED, "n_trials")
            self.stop_reason = "n_trials"
            return True
        return False


def failure_rule(job: Job) -> str:
    """Which limit a job's failed trials reached, for its error message."""
    if job.max_failed_trials is not None:
        return f"max_failed_trials is {job.max_failed_trials}"
    return (
        f"max_failed_trials was not set; a job then stops after "
        f"max(HUB_DEFAULT_MAX_FAILED_TRIALS, 2 x n_trials) = {job.failure_limit} failed trials"
    )


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
        if fair.should_yield(runner.job, now):
            runner.yield_requested.set()
        if runner.watch is not None and time.monotonic() - self.last_watch >= grace_period():
            self.last_watch = time.monotonic()
            runner.watch()
