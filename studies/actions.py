"""State changes that cross models and workers, one function each (Zulip's ``do_*``).

Pages, the REST API, the admin and the management commands call these, so the
rules (who may, what else must happen, in which order) live once. Changes that
touch one row only are model or QuerySet methods (``Job.cancel``).

Each raises ``PermissionDenied`` when ``user`` may not, and ``ConfigError``
(naming every invalid field) for bad input, before anything is written; starting
or retrying a job raises ``TooManyJobs`` (a PermissionDenied; the API's 429) when
its user already has HUB_MAX_ACTIVE_JOBS_PER_USER active jobs (or the study's
team HUB_MAX_ACTIVE_JOBS_PER_TEAM).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from studies.config.errors import ConfigError
from studies.jobs.base import TooManyJobs, max_active_jobs, max_team_active_jobs, slot_quotas
from studies.jobs.options import clean_job_options
from studies.jobs.tasks import enqueue_slots, ensure_watchdog_schedule
from studies.models import AuditEntry, Job, JobSlot, Study, Team
from studies.storage import get_storage

jobs_logger = logging.getLogger("optuna_hub.jobs")

NAME_TAKEN = ConfigError("name", "a study with this name already exists")


def _check_can_edit(study: Study, user: Any, what: str) -> None:
    if not study.can_edit(user):
        raise PermissionDenied(f"Only the study's owner, its team's editors or staff can {what}.")


def _actor(user: Any) -> Any:
    return user if getattr(user, "pk", None) else None


def _check_active_jobs(user: Any, study: Study) -> None:
    """Raise TooManyJobs when ``user`` (or the study's team) may not have one more active job.

    Called in the transaction that adds the job, holding the user's row and then
    the team's (the order the workers take them in), so requests at once cannot
    together pass a limit.
    """
    if user is not None:  # None: a job nobody started (a management command)
        list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))
    if study.team_id is not None:
        team = Team.objects.select_for_update().get(pk=study.team_id)
        active = Job.objects.active().filter(study__team_id=team.pk).count()
        if active >= max_team_active_jobs():
            raise TooManyJobs(active, max_team_active_jobs(), team=team.name)
    if user is not None:
        active = Job.objects.active().filter(created_by=user).count()
        if active >= max_active_jobs():
            raise TooManyJobs(active, max_active_jobs())


def _record_job(user: Any, action: str, job: Job, **detail: Any) -> None:
    target = f"job {job.pk} on study {job.study.name}"
    AuditEntry.record(_actor(user), action, target, study=job.study, job=job.pk, **detail)


def _log_job(event: str, job: Job, user: Any, more: str = "") -> None:
    """The job's log line (optuna_hub.jobs), once its change is committed."""
    user_id = getattr(user, "pk", None)
    jobs_logger.info(
        "job %s %s on study %s by user %s%s",
        job.pk,
        event,
        job.study_id,
        user_id or "-",
        more,
        extra={"event": f"job_{event}", "job": job.pk, "study": job.study_id, "user": user_id},
    )


def do_create_study(user: Any, config: dict[str, Any]) -> Study:
    """A new study owned by ``user`` from a configuration ``clean_study_config`` returned.

    ``config`` may also place it (``team``, ``visibility``: studies.teams.clean_placement).
    """
    owner = _actor(user)
    try:
        with transaction.atomic():
            study = Study.objects.create(owner=owner, **config)
            AuditEntry.record(owner, AuditEntry.STUDY_CREATED, f"study {study.name}", study=study)
            return study
    except IntegrityError:  # the same name taken by another request just now
        raise NAME_TAKEN from None


def do_update_study(study: Study, user: Any, config: dict[str, Any]) -> Study:
    _check_can_edit(study, user, "change it")
    changed = sorted(key for key, value in config.items() if getattr(study, key) != value)
    team_before = study.team_id
    for key, value in config.items():
        setattr(study, key, value)
    try:
        with transaction.atomic():
            # Only the changed columns: an ask recording a new parameter meanwhile
            # (param_distributions) must not be undone.
            study.save(update_fields=[*config, "updated_at"])
            if changed:
                moved = {"from_team": team_before} if team_before != study.team_id else {}
                AuditEntry.record(
                    _actor(user),
                    AuditEntry.STUDY_EDITED,
                    f"study {study.name}",
                    study=study,
                    fields=changed,
                    **moved,
                )
    except IntegrityError:
        raise NAME_TAKEN from None
    return study


def do_delete_study(study: Study, user: Any) -> None:
    """Cancel the study's jobs, then delete it with its trials (one transaction).

    Cancelling first lets each worker see a cancelled job and stop between
    trials; a worker caught inside a trial finds the study gone and ends quietly.
    """
    _check_can_edit(study, user, "delete it")
    for job in study.jobs.active():
        job.cancel()
    try:
        get_storage().delete_study(study.pk)
    except KeyError:
        return  # deleted by another request meanwhile: the outcome the user asked for
    AuditEntry.record(
        _actor(user),
        AuditEntry.STUDY_DELETED,
        f"study {study.name}",
        study=study,
        n_trials=study.n_trials,
    )


def do_start_job(study: Study, user: Any, **options: Any) -> Job:
    """Validate, record and enqueue a job on ``study``; return it (status "queued").

    Every invalid option is reported at once; nothing is queued when it raises.
    """
    _check_can_edit(study, user, "run jobs on it")
    options = clean_job_options(study, options)
    quotas = slot_quotas(options["n_trials"], options["concurrency"])
    creator = user if getattr(user, "pk", None) else None
    with transaction.atomic():
        _check_active_jobs(creator, study)
        job = Job.objects.create(
            study=study, created_by=creator, objective=study.objective, **options
        )
        JobSlot.objects.bulk_create(
            JobSlot(job=job, index=i, quota=quota) for i, quota in enumerate(quotas)
        )
        _record_job(creator, AuditEntry.JOB_STARTED, job, n_trials=job.n_trials)
        transaction.on_commit(lambda: enqueue_slots(job.pk))
    ensure_watchdog_schedule()
    _log_job("started", job, creator, f": {job.n_trials} trials, concurrency {job.concurrency}")
    return job


def do_cancel_job(job: Job, user: Any) -> bool:
    """Ask the job to stop; workers notice within one trial. False if it had ended."""
    _check_can_edit(job.study, user, "cancel its jobs")
    with transaction.atomic():
        cancelled = job.cancel()
        if cancelled:
            _record_job(user, AuditEntry.JOB_CANCELLED, job)
    if cancelled:
        _log_job("cancelled", job, user)
    return cancelled


def do_retry_job(job: Job, user: Any) -> bool:
    """Run a failed or cancelled job (or one stopped by its timeout) again.

    Its trials so far keep counting toward n_trials; the timeout starts over.
    False if the job cannot be retried.
    """
    _check_can_edit(job.study, user, "retry its jobs")
    with transaction.atomic():
        if not job.is_active:
            _check_active_jobs(job.created_by, job.study)  # the job is its creator's again
        retried = job.requeue()
        if retried:
            _record_job(user, AuditEntry.JOB_RETRIED, job)
            transaction.on_commit(lambda: enqueue_slots(job.pk))
    job.refresh_from_db()
    if retried:
        _log_job("retried", job, user)
    return retried
