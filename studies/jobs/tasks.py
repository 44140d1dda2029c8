"""The django-q2 side of jobs: the slot task, how slots are queued, and the watchdog.

``run_job_slot`` is the task; ``enqueue_slots`` queues it once per slot;
``wake_parked`` queues parked slots (fair.py) that may run now; ``check_jobs``
(the watchdog, which also wakes parked slots) runs at the start of every task,
every grace period inside every running task, once a minute as a django-q2
schedule and from ``manage.py hub_watchdog``. ``hand_back`` frees what the
workers of a stopping cluster held (``manage.py start``'s Ctrl-C).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

import optuna
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task
from optuna.trial import TrialState

from studies.jobs.base import WATCHDOG_SCHEDULE, counted_trials, finish, grace_period, max_resumes
from studies.jobs.fair import wake_slots
from studies.jobs.job_storage import fail_stale_trial
from studies.jobs.runner import SlotRunner
from studies.models import Job, JobSlot, RemoteCall, Trial
from studies.storage import DjangoStorage

logger = logging.getLogger(__name__)


def run_job_slot(job_id: int, index: int) -> str:
    """The django-q2 task: run one slot of a job until the job is done (or it waits)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_jobs()
    except DatabaseError:
        logger.exception("watchdog failed")
    runner = SlotRunner.lease(job_id, index, watch=check_jobs)
    if isinstance(runner, str):
        return runner  # not this slot's turn: parked, or nothing to do
    wake_parked()  # slots that waited for this one to start go next
    try:
        result = runner.run()
        if runner.handed_off:
            enqueue_slots(job_id, [index])
    finally:
        wake_parked()  # this worker is free: the fairest parked slots may have it
    return result


def enqueue_slots(job_id: int, indexes: list[int] | None = None) -> None:
    slots = JobSlot.objects.filter(job_id=job_id, finished=False)
    if indexes is not None:
        slots = slots.filter(index__in=indexes)
    for index in slots.values_list("index", flat=True):
        JobSlot.objects.filter(job_id=job_id, index=index).update(
            enqueued_at=timezone.now(), n_enqueued=F("n_enqueued") + 1, waiting=""
        )
        send_slot_task(job_id, index)


def send_slot_task(job_id: int, index: int) -> None:
    async_task(
        run_job_slot,
        job_id,
        index,
        task_name=f"job-{job_id}-slot-{index}",
        group=f"job-{job_id}",
    )


def wake_parked() -> list[str]:
    """Queue the parked slots that may run now (studies/jobs/fair.py)."""
    actions = []
    try:
        for slot in wake_slots():
            send_slot_task(slot.job_id, slot.index)
            actions.append(f"job {slot.job_id}: woke slot {slot.index} ({slot.waiting})")
    except DatabaseError:
        logger.exception("waking parked slots failed")
    return actions


def ensure_watchdog_schedule() -> None:
    """The django-q2 schedule that runs check_jobs every minute (created once)."""
    # A schedule names its function by dotted path (django-q2 stores it as text).
    Schedule.objects.update_or_create(
        name=WATCHDOG_SCHEDULE,
        defaults={
            "func": f"{check_jobs.__module__}.{check_jobs.__name__}",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )


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
            if not slot.token and slot.waiting:
                continue  # parked on purpose, with no task: wake_parked below
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
    actions += wake_parked()
    forgotten = RemoteCall.forget_old()
    if forgotten:
        actions.append(f"forgot {forgotten} remote storage answers kept for retries")
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


# Stopping a cluster (``manage.py start``'s Ctrl-C)


def busy_workers(workers: Collection[str]) -> set[str]:
    """Which of these worker processes ("host:pid") hold a job slot now."""
    held = JobSlot.objects.exclude(token="").filter(worker__in=list(workers))
    return set(held.values_list("worker", flat=True))


def hand_back(workers: Collection[str]) -> list[str]:
    """Give back what the stopped worker processes ``workers`` held, saying what.

    Their running trials fail and are queued to re-run with the same params,
    and their slots are freed, so the jobs resume as soon as a worker is there
    again rather than after the heartbeat grace period.
    """
    workers = set(workers)
    storage = DjangoStorage()
    said = []
    running = Trial.objects.filter(job_link__isnull=False, state=TrialState.RUNNING)
    rows = running.values_list("id", "number", "job_link__job_id", "system_attrs")
    for trial_id, number, job_id, attrs in rows:
        if attrs.get("hub_worker") in workers and fail_stale_trial(
            storage, trial_id, None, "the hub was stopped while it ran"
        ):
            said.append(
                f"Handed back trial {number} of job {job_id}: it runs again with the same params."
            )
    slots = JobSlot.objects.exclude(token="").filter(worker__in=list(workers))
    jobs = sorted(set(slots.values_list("job_id", flat=True)))
    # enqueued_at None: the watchdog queues them at once, with no back-off.
    slots.update(token="", heartbeat=None, worker="", enqueued_at=None)
    Job.objects.filter(pk__in=jobs, status=Job.RUNNING).update(status=Job.QUEUED)
    said += [f"Job {job_id} resumes when the hub starts again." for job_id in jobs]
    return said
