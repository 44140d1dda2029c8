from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from studies.models.fields import JSONTextField
from studies.models.trial import Trial, TrialQuerySet

# Jobs: optimizations the hub runs itself on django-q2 workers (studies/jobs/).
# django-q2 only delivers tasks, so these rows are the truth: status, progress,
# heartbeats and the cancel request live here, and every task re-reads them.


def default_failure_limit(n_trials: int) -> int:
    return max(settings.HUB_DEFAULT_MAX_FAILED_TRIALS, 2 * n_trials)


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

    study = models.ForeignKey("Study", on_delete=models.CASCADE, related_name="jobs")
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
    # Stopping rules (studies/jobs/stopping.py): {"target": [v], "patience": n, "min_delta": d}.
    stop_when = JSONTextField(default=dict, blank=True)
    stop_reason = models.CharField(max_length=40, blank=True, default="")
    # What stopped a job that ended early on a rule: "Stopped: target 0.01 reached at trial #812".
    stop_detail = models.CharField(max_length=300, blank=True, default="")
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

    @property
    def failure_limit(self) -> int:
        """Failed trials that fail the job: max_failed_trials, or the default.

        Without a limit a job whose objective always fails would never end (failed
        trials do not count toward n_trials); twice n_trials leaves an objective
        that fails half the time room to finish.
        """
        if self.max_failed_trials is not None:
            return self.max_failed_trials
        return default_failure_limit(self.n_trials)

    def get_api_url(self) -> str:
        return reverse("api-job-detail", args=[self.pk])

    def trials(self) -> TrialQuerySet:
        return Trial.objects.filter(job_link__job=self)

    def progress(self) -> dict[str, int]:
        counts = self.trials().counts_by_state()
        return {
            "complete": counts["COMPLETE"],
            "pruned": counts["PRUNED"],
            "failed": counts["FAIL"],
            "running": counts["RUNNING"],
            "n_trials": self.n_trials,
        }

    def best_value(self) -> float | None:
        """The best objective value among this job's trials (single-objective studies)."""
        if len(self.study.directions) != 1:
            return None
        return self.trials().best_value(self.study.directions[0])

    def cancel(self) -> bool:
        """Ask the job to stop; workers notice within one trial. False if it had ended."""
        stopped = Job.objects.filter(pk=self.pk, status__in=self.ACTIVE).update(
            status=self.CANCELLED, stop_reason="cancelled", finished_at=timezone.now()
        )
        self.refresh_from_db()
        return bool(stopped)

    def requeue(self) -> bool:
        """Queue a failed, cancelled or timed-out job again; False if it is not one.

        Its trials so far keep counting toward n_trials; the timeout starts over.
        The caller enqueues the slots (studies.actions.do_retry_job).
        """
        retryable = models.Q(status__in=[self.FAILED, self.CANCELLED]) | models.Q(
            status=self.SUCCEEDED, stop_reason="timeout"
        )
        updated = Job.objects.filter(retryable, pk=self.pk).update(
            status=self.QUEUED,
            stop_reason="",
            error="",
            started_at=None,
            finished_at=None,
            n_failed=0,
            n_resumes=0,
            next_start_at=None,
            stop_detail="",
        )
        if updated:
            JobSlot.objects.filter(job_id=self.pk).update(
                finished=False, n_enqueued=0, waiting="", start_at=None
            )
        return bool(updated)


class JobSlot(models.Model):
    """One of a job's ``concurrency`` lanes: at most one live task holds it at a time.

    A task leases the slot with a conditional UPDATE and keeps the lease by
    heartbeat; a duplicate or re-delivered task for a held slot does nothing, and
    a slot whose holder stopped heartbeating can be taken over.

    A slot that is not leased is queued (a task for it is in the broker's queue)
    or, with ``waiting`` set, parked with no task until something queues it again
    (studies/jobs/fair.py): DELAY until ``start_at``, LIMIT while its user has
    their most running slots, TURN while another user's slot goes first.
    """

    DELAY, LIMIT, TURN = "delay", "limit", "turn"
    WAITING_CHOICES = [("", "queued or running"), (DELAY, DELAY), (LIMIT, LIMIT), (TURN, TURN)]

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
    waiting = models.CharField(max_length=10, choices=WAITING_CHOICES, blank=True, default="")
    # With a delay: the start this slot reserved for its next trial (kept while parked).
    start_at = models.DateTimeField(null=True, blank=True)
    # The process ("host:pid") holding the lease, so a stopping cluster hands back its own.
    worker = models.CharField(max_length=200, blank=True, default="")

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
    trial = models.OneToOneField("Trial", on_delete=models.CASCADE, related_name="job_link")
    slot = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["job", "slot"])]
