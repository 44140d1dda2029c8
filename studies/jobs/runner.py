"""A slot's run: its lease and heartbeat, the delay, the timeout, hand-off and stopping."""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import optuna
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.conf import Conf
from optuna.trial import FrozenTrial

from studies.jobs.base import (
    SlotLost,
    counted_trials,
    finish,
    grace_period,
    heartbeat_interval,
    objective_of,
)
from studies.jobs.job_storage import JOB_TABLE
from studies.jobs.modes import DurableRun, MemoryRun
from studies.models import Job, JobSlot
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
        # Set by a durable run: writes the heartbeats of its running trials.
        self.beat_trials: Callable[[], None] | None = None

    @classmethod
    def lease(
        cls, job_id: int, index: int, watch: Callable[[], Any] | None = None
    ) -> SlotRunner | None:
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
        return cls(job, slot, token, watch)

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
            logger.exception("job %s slot %s failed", self.job.pk, self.slot.index)
            summary = "".join(traceback.format_exception_only(type(e), e)).strip()
            finish(self.job.pk, Job.FAILED, "error", f"slot {self.slot.index}: {summary}")
            self.release(finished=True)
            return f"job {self.job.pk} slot {self.slot.index}: failed: {summary}"
        finally:
            self.heartbeat.stop()
        if self.handed_off:
            self.release()  # the caller queues the slot again
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
        if runner.watch is not None and time.monotonic() - self.last_watch >= grace_period():
            self.last_watch = time.monotonic()
            runner.watch()
