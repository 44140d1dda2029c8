"""Jobs over HTTP: a job's options in, its status and progress out."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from studies.actions import do_start_job
from studies.api.serializers import ObjectiveValueField, config_error, iso
from studies.config.errors import ConfigError
from studies.jobs.base import MAX_DELAY, MAX_TRIALS
from studies.jobs.fair import waiting_reason
from studies.jobs.options import MODES, clean_job_options
from studies.models import Job, json_safe

# Jobs


class ProgressSerializer(serializers.Serializer):
    complete = serializers.IntegerField()
    pruned = serializers.IntegerField()
    failed = serializers.IntegerField()
    running = serializers.IntegerField()
    n_trials = serializers.IntegerField()


class JobSerializer(serializers.Serializer):
    """A job. Input is validated as a whole by clean_job_options (the run form's too)."""

    id = serializers.IntegerField(read_only=True)
    study = serializers.IntegerField(read_only=True)
    objective = serializers.CharField(read_only=True)
    mode = serializers.ChoiceField(choices=MODES, default=Job.DURABLE)
    status = serializers.ChoiceField(choices=[s for s, _ in Job.STATUS_CHOICES], read_only=True)
    progress = ProgressSerializer(read_only=True)
    best_value = ObjectiveValueField(allow_null=True, read_only=True)
    n_trials = serializers.IntegerField(min_value=1, max_value=MAX_TRIALS)
    timeout = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Seconds; the job stops after."
    )
    concurrency = serializers.IntegerField(
        default=1, min_value=1, help_text="Trials run at once, across worker processes."
    )
    delay = serializers.FloatField(
        default=0, min_value=0, max_value=MAX_DELAY, help_text="Seconds between trial starts."
    )
    max_failed_trials = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Fail the job after this many."
    )
    stop_when = serializers.JSONField(
        required=False,
        help_text='Stop early, succeeded: {"target": v} (one number per objective: a list), '
        '{"patience": n, "min_delta": d} (no improvement over n finished trials).',
    )
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(allow_null=True, read_only=True)
    finished_at = serializers.DateTimeField(allow_null=True, read_only=True)
    heartbeat = serializers.DateTimeField(allow_null=True, read_only=True)
    stop_reason = serializers.CharField(
        read_only=True,
        help_text="n_trials, target, patience, timeout, cancelled, max_failed_trials, "
        "workers_died or error.",
    )
    stop_detail = serializers.CharField(
        read_only=True, help_text='What a rule saw: "Stopped: target 0.01 reached at trial #812".'
    )
    error = serializers.CharField(read_only=True)
    waiting_reason = serializers.CharField(
        read_only=True,
        help_text='Why an active job runs no trial now ("waiting for a free worker, 2 ahead", '
        '"waiting: you have 4 running slots (limit 4)", "next trial at 14:05:00 (delay)"); '
        '"" otherwise.',
    )
    url = serializers.CharField(read_only=True)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return clean_job_options(self.context["study"], data)
        except ConfigError as e:
            raise config_error(e) from None

    def create(self, validated_data: dict[str, Any]) -> Job:
        return do_start_job(self.context["study"], self.context["request"].user, **validated_data)

    def to_representation(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.pk,
            "study": job.study_id,
            "objective": job.objective,
            "mode": job.mode,
            "status": job.status,
            "progress": job.progress(),
            "best_value": json_safe(job.best_value()),
            "n_trials": job.n_trials,
            "timeout": job.timeout,
            "concurrency": job.concurrency,
            "delay": job.delay,
            "max_failed_trials": job.max_failed_trials,
            "stop_when": job.stop_when,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at),
            "heartbeat": iso(job.heartbeat),
            "stop_reason": job.stop_reason,
            "stop_detail": job.stop_detail,
            "error": job.error,
            "waiting_reason": waiting_reason(job),
            "url": job.get_api_url(),
        }


class JobCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[Job.QUEUED])
    url = serializers.CharField()


class ObjectiveSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(choices=["builtin", "sklearn", "project", "command"])
    directions = serializers.ListField(child=serializers.ChoiceField(["minimize", "maximize"]))
    search_space = serializers.DictField(help_text="The default search space.")
    options = serializers.DictField()
