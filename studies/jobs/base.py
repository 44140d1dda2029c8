"""What every part of a job shares: limits, counted states, finishing, exceptions."""

from __future__ import annotations

import logging
import os
import socket

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from optuna.trial import TrialState

from studies.config.errors import ConfigError
from studies.models import AuditEntry, Job, Study, Trial
from studies.models.audit import WORKER
from studies.objectives.base import ObjectiveInfo
from studies.objectives.registry import get_objective

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MAX_TRIALS = 1_000_000
MAX_DELAY = 86_400
# A trial whose worker died this many times is not re-run again: it probably
# kills its worker (out of memory, a crash in native code).
MAX_TRIAL_RETRIES = 3
WATCHDOG_SCHEDULE = "optuna-hub job watchdog"

jobs_logger = logging.getLogger("optuna_hub.jobs")


def heartbeat_interval() -> int:
    return settings.HUB_HEARTBEAT_INTERVAL


def grace_period() -> int:
    return settings.HUB_HEARTBEAT_GRACE


def max_resumes() -> int:
    # Restarts after workers died, before the job is failed.
    return settings.HUB_MAX_JOB_RESUMES


def flush_interval() -> int:
    return settings.HUB_MEMORY_FLUSH_INTERVAL


def max_active_jobs() -> int:
    return settings.HUB_MAX_ACTIVE_JOBS_PER_USER


def max_running_slots() -> int:
    return settings.HUB_MAX_RUNNING_SLOTS_PER_USER


def max_team_active_jobs() -> int:
    return settings.HUB_MAX_ACTIVE_JOBS_PER_TEAM


def max_team_running_slots() -> int:
    return settings.HUB_MAX_RUNNING_SLOTS_PER_TEAM


def delay_sleep_max() -> int:
    # A wait up to this long costs less in the worker than a round trip through
    # the queue, and the watchdog that wakes a parked slot runs only so often.
    return settings.HUB_DELAY_SLEEP_MAX


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobFull(Exception):
    """The job has claimed all its trials, or has ended: start no new trial."""


class SlotLost(Exception):
    """Another task took this slot over (this one was thought dead)."""


class TooManyJobs(PermissionDenied):
    """The user (or the study's team) already has its limit of queued or running jobs.

    HUB_MAX_ACTIVE_JOBS_PER_USER, and HUB_MAX_ACTIVE_JOBS_PER_TEAM for a team's
    studies. The REST API answers it with a 429 and the run form shows it; being
    a PermissionDenied, anything else (the admin's retry action) shows a 403 with
    the message rather than a server error.
    """

    def __init__(self, active: int, limit: int, team: str | None = None) -> None:
        who, setting = (f"team {team!r} has", "TEAM") if team else ("you have", "USER")
        super().__init__(
            f"Too many active jobs: {who} {active} queued or running "
            f"(HUB_MAX_ACTIVE_JOBS_PER_{setting} is {limit}); wait for one to end or cancel one."
        )
        self.active = active
        self.limit = limit


def objective_of(study: Study) -> ObjectiveInfo:
    if not study.objective:
        raise ConfigError(
            "objective", "the study has no objective: set one before running jobs on it"
        )
    info = get_objective(study.objective)
    if info is None:
        raise ConfigError("objective", f"{study.objective!r} is not a registered objective")
    return info


def finish(job_id: int, status: str, reason: str, error: str = "", detail: str = "") -> bool:
    """Move an active job to a final status; False if it had already ended.

    Only the workers call it, so the audit entry it writes says so.
    """
    with transaction.atomic():
        finished = Job.objects.filter(pk=job_id, status__in=Job.ACTIVE).update(
            status=status,
            stop_reason=reason,
            stop_detail=detail[:300],
            error=error[:10_000],
            finished_at=timezone.now(),
        )
        study = Study.objects.filter(jobs__pk=job_id).first() if finished else None
        if study is not None:
            AuditEntry.record(
                None,
                AuditEntry.JOB_FINISHED,
                f"job {job_id} on study {study.name}",
                study=study,
                via=WORKER,
                job=job_id,
                status=status,
                reason=reason,
            )
    if finished:
        extra = {"event": "job_finished", "job": job_id, "status": status, "reason": reason}
        jobs_logger.info("job %s finished: %s (%s)", job_id, status, reason, extra=extra)
    return bool(finished)


def counted_trials(job_id: int, states: tuple[TrialState, ...] = COUNTED) -> int:
    return Trial.objects.filter(job_link__job_id=job_id, state__in=states).count()


def slot_quotas(n_trials: int, concurrency: int) -> list[int]:
    """Each slot's share of n_trials (memory mode runs exactly its share).

    More slots than trials would only wait, so there are at most n_trials.
    """
    n_slots = min(concurrency, n_trials)
    return [n_trials // n_slots + (i < n_trials % n_slots) for i in range(n_slots)]
