"""The rows behind every Optuna study in the hub.

Optuna owns the trial data (written through studies.storage.DjangoStorage); the
hub adds what a shared service needs around it: an owner, the sampler and pruner
configuration, a declared search space and the objective the workers run.

A trial is one row. Params, distributions, intermediate values and attributes
are JSON text columns rather than child tables: one query reads a trial whole,
the text keeps key order (PostgreSQL's jsonb does not) and Python's JSON keeps
inf, -inf and nan exactly.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
from django.conf import settings
from django.db import models
from django.urls import reverse
from optuna.trial import TrialState


class JSONTextField(models.TextField):
    """JSON in a text column: key order, floats, inf and nan round-trip exactly."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj))


class StudyQuerySet(models.QuerySet["Study"]):
    def with_trial_counts(self) -> StudyQuerySet:
        counts = {
            f"n_{state.name.lower()}": models.Count("trials", filter=models.Q(trials__state=state))
            for state in TrialState
        }
        return self.annotate(n_trials=models.Count("trials"), **counts)


class Study(models.Model):
    name = models.CharField(max_length=512, unique=True)
    # Optuna's direction names, one per objective: ["minimize"] or ["minimize", "maximize"].
    directions = JSONTextField(default=list)
    user_attrs = JSONTextField(default=dict)
    system_attrs = JSONTextField(default=dict)
    # The first distribution seen for each parameter name, to reject an
    # incompatible one later as Optuna's own storages do.
    param_distributions = JSONTextField(default=dict)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="studies",
    )
    sampler = JSONTextField(default=dict, blank=True)
    pruner = JSONTextField(default=dict, blank=True)
    search_space = JSONTextField(default=dict, blank=True)
    objective = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("studies:study", args=[self.pk])

    @property
    def is_multi_objective(self) -> bool:
        return len(self.directions) > 1

    def optuna_study(self, storage: Any = None) -> optuna.Study:
        """This study as an optuna.Study with its configured sampler and pruner."""
        from studies.samplers import build_pruner, build_sampler
        from studies.storage import get_storage

        return optuna.Study(
            study_name=self.name,
            storage=storage or get_storage(),
            sampler=build_sampler(self.sampler, self.search_space),
            pruner=build_pruner(self.pruner),
        )

    def can_edit(self, user: Any) -> bool:
        return bool(user.is_authenticated and (user.is_staff or self.owner_id == user.pk))


class TrialQuerySet(models.QuerySet["Trial"]):
    def finished(self) -> TrialQuerySet:
        return self.filter(state__in=[TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])

    def complete(self) -> TrialQuerySet:
        return self.filter(state=TrialState.COMPLETE)


class Trial(models.Model):
    STATE_CHOICES = [(state.value, state.name) for state in TrialState]

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField()
    state = models.PositiveSmallIntegerField(choices=STATE_CHOICES, db_index=True)
    # All objective values (JSON, so inf and nan survive) and the first one as a
    # float column for ordering; None until the trial completes.
    values = JSONTextField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)
    # Internal representations, as Optuna's storages keep them; the external
    # value is distribution.to_external_repr(internal).
    params = JSONTextField(default=dict)
    distributions = JSONTextField(default=dict)
    intermediate_values = JSONTextField(default=dict)
    user_attrs = JSONTextField(default=dict)
    system_attrs = JSONTextField(default=dict)
    datetime_start = models.DateTimeField(null=True, blank=True)
    datetime_complete = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    objects = TrialQuerySet.as_manager()

    class Meta:
        ordering = ["study_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="unique_trial_number"),
        ]
        indexes = [models.Index(fields=["study", "state"])]

    def __str__(self) -> str:
        return f"{self.study.name} #{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("studies:trial", args=[self.pk])

    @property
    def state_name(self) -> str:
        return TrialState(self.state).name

    @property
    def duration(self) -> float | None:
        if self.datetime_start and self.datetime_complete:
            return (self.datetime_complete - self.datetime_start).total_seconds()
        return None

    def to_dict(self) -> dict[str, Any]:
        """The trial as the API and exports show it: external params, JSON-safe numbers."""
        from studies.storage import parse_distribution

        params = {
            name: parse_distribution(self.distributions[name]).to_external_repr(value)
            for name, value in self.params.items()
        }
        return {
            "trial_id": self.pk,
            "number": self.number,
            "state": self.state_name,
            "values": json_safe(self.values),
            "params": json_safe(params),
            "intermediate_values": json_safe(self.intermediate_values),
            "datetime_start": self.datetime_start and self.datetime_start.isoformat(),
            "datetime_complete": self.datetime_complete and self.datetime_complete.isoformat(),
            "duration": self.duration,
            "user_attrs": json_safe(self.user_attrs),
        }

    def to_frozen(self) -> Any:
        from studies.storage import frozen_trial_from_row

        return frozen_trial_from_row(*[getattr(self, name) for name in TRIAL_ROW_FIELDS])


# The columns DjangoStorage reads to build an optuna FrozenTrial, in order.
TRIAL_ROW_FIELDS = (
    "id",
    "number",
    "state",
    "values",
    "params",
    "distributions",
    "intermediate_values",
    "user_attrs",
    "system_attrs",
    "datetime_start",
    "datetime_complete",
)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as "inf", "-inf" and "nan": strict JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def first_value(values: list[float] | None) -> float | None:
    """The sortable first objective value (SQLite stores nan as NULL anyway)."""
    if not values or values[0] is None or math.isnan(values[0]):
        return None
    return float(values[0])


# Jobs: optimizations the hub runs itself on django-q2 workers (studies/jobs.py).
# django-q2 only delivers tasks, so these rows are the truth: status, progress,
# heartbeats and the cancel request live here, and every task re-reads them.


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=Job.ACTIVE)


class Job(models.Model):
    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    )
    STATUS_CHOICES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)
    DURABLE, MEMORY = "durable", "memory"
    MODE_CHOICES = [(DURABLE, DURABLE), (MEMORY, MEMORY)]

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    objective = models.CharField(max_length=200)
    mode = models.CharField(max_length=10, choices=MODE_CHOICES, default=DURABLE)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=QUEUED, db_index=True)
    n_trials = models.PositiveIntegerField()
    timeout = models.FloatField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField(default=1)
    delay = models.FloatField(default=0)
    max_failed_trials = models.PositiveIntegerField(null=True, blank=True)
    # Trials whose objective failed; trials failed because their worker died
    # are re-run instead and do not count here.
    n_failed = models.PositiveIntegerField(default=0)
    # Times the watchdog restarted the job after its workers died.
    n_resumes = models.PositiveIntegerField(default=0)
    # Parameters of trials failed by a dead worker, to re-run before sampling new ones.
    retry_params = JSONTextField(default=list, blank=True)
    # With a delay, the earliest time the next trial may start.
    next_start_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=40, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["study", "status"])]

    def __str__(self) -> str:
        return f"job {self.pk} on {self.study.name}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def get_api_url(self) -> str:
        return reverse("api-job", args=[self.pk])

    def trials(self) -> TrialQuerySet:
        return Trial.objects.filter(job_link__job=self)

    def progress(self) -> dict[str, int]:
        counts = dict(self.trials().values_list("state").annotate(n=models.Count("id")))
        return {
            "complete": counts.get(TrialState.COMPLETE, 0),
            "pruned": counts.get(TrialState.PRUNED, 0),
            "failed": counts.get(TrialState.FAIL, 0),
            "running": counts.get(TrialState.RUNNING, 0),
            "n_trials": self.n_trials,
        }

    def best_value(self) -> float | None:
        """The best objective value among this job's trials (single-objective studies)."""
        if len(self.study.directions) != 1:
            return None
        complete = self.trials().filter(state=TrialState.COMPLETE, value__isnull=False)
        if self.study.directions[0] == "maximize":
            return complete.aggregate(best=models.Max("value"))["best"]
        return complete.aggregate(best=models.Min("value"))["best"]

    def to_dict(self) -> dict[str, Any]:
        def iso(dt: Any) -> str | None:
            return dt.isoformat() if dt else None

        return {
            "id": self.pk,
            "study": self.study_id,
            "objective": self.objective,
            "mode": self.mode,
            "status": self.status,
            "progress": self.progress(),
            "best_value": json_safe(self.best_value()),
            "n_trials": self.n_trials,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "delay": self.delay,
            "max_failed_trials": self.max_failed_trials,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "heartbeat": iso(self.heartbeat),
            "stop_reason": self.stop_reason,
            "error": self.error,
            "url": self.get_api_url(),
        }

    def cancel(self) -> bool:
        """Ask the job to stop; workers notice within one trial. False if it had ended."""
        from django.utils import timezone

        stopped = Job.objects.filter(pk=self.pk, status__in=self.ACTIVE).update(
            status=self.CANCELLED, stop_reason="cancelled", finished_at=timezone.now()
        )
        self.refresh_from_db()
        return bool(stopped)

    def retry(self) -> bool:
        """Run a failed or cancelled job again; its finished trials keep counting."""
        from studies.jobs import retry_job

        return retry_job(self)


class JobSlot(models.Model):
    """One of a job's ``concurrency`` lanes: at most one live task holds it at a time.

    A task leases the slot with a conditional UPDATE and keeps the lease by
    heartbeat; a duplicate or re-delivered task for a held slot does nothing, and
    a slot whose holder stopped heartbeating can be taken over.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    token = models.CharField(max_length=32, blank=True, default="")
    heartbeat = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    n_enqueued = models.PositiveIntegerField(default=0)
    n_starts = models.PositiveIntegerField(default=0)
    # Memory mode: this slot's share of n_trials.
    quota = models.PositiveIntegerField(default=0)
    finished = models.BooleanField(default=False)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="unique_job_slot"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} slot {self.index}"


class JobTrial(models.Model):
    """Which job ran a trial, so a job counts its own trials and no others."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="job_trials")
    trial = models.OneToOneField(Trial, on_delete=models.CASCADE, related_name="job_link")
    slot = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["job", "slot"])]


def default_directions() -> list[str]:
    return ["minimize"]


class CommandObjective(models.Model):
    """An objective that runs a program per trial, registered by staff in the admin.

    The program is started from ``argv`` (never through a shell) with ``{name}``
    placeholders replaced by the trial's parameters, which are also in its
    environment as ``HUB_PARAM_<NAME>``. It reports through its output, one
    statement per line: ``report <step> <value>`` for intermediate values and
    ``value <v>`` (or ``values <v1> <v2> ...``) for the result; see
    studies/objectives/command.py.
    """

    name = models.CharField(
        max_length=100,
        unique=True,
        help_text="Letters, digits, '_', '-' and '.'; studies name their objective by it.",
    )
    description = models.TextField(blank=True, default="")
    argv = JSONTextField(
        default=list, help_text='A JSON list, e.g. ["python3", "train.py", "--lr", "{lr}"].'
    )
    directions = JSONTextField(default=default_directions)
    search_space = JSONTextField(default=dict, blank=True)
    working_directory = models.CharField(max_length=500, blank=True, default="")
    environment = JSONTextField(default=dict, blank=True)
    timeout = models.FloatField(
        default=3600, help_text="Seconds a trial may run before it is killed."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from studies.objectives.command import validate_command_objective
        from studies.search_space import ConfigError

        try:
            validate_command_objective(self)
        except ConfigError as e:
            field = e.field.split(".", 1)[0]
            known = {f.name for f in self._meta.fields}
            raise ValidationError({field if field in known else "__all__": e.message}) from None
