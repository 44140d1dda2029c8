"""Jobs and objectives over HTTP: start N trials on the workers, poll, cancel.

Validation is studies.jobs.start_job, the same function the pages call; the
serializers here document the shapes in the OpenAPI schema. A bad request is
``400 {field: [message]}`` and queues nothing.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from studies import jobs
from studies.api.serializers import ObjectiveValueField
from studies.api.views import ERRORS, APIViewSet
from studies.models import Job, Study
from studies.objectives import get_objectives
from studies.search_space import ConfigError

JOB_FIELDS = ("n_trials", "timeout", "concurrency", "delay", "max_failed_trials", "mode")


class JobRequestSerializer(serializers.Serializer):
    n_trials = serializers.IntegerField(min_value=1, max_value=jobs.MAX_TRIALS)
    timeout = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Seconds; the job stops after."
    )
    concurrency = serializers.IntegerField(
        required=False,
        default=1,
        min_value=1,
        max_value=settings.HUB_MAX_JOB_CONCURRENCY,
        help_text="Trials run at once, across worker processes.",
    )
    delay = serializers.FloatField(
        required=False,
        default=0,
        min_value=0,
        max_value=jobs.MAX_DELAY,
        help_text="Seconds between trial starts.",
    )
    max_failed_trials = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Fail the job after this many."
    )
    mode = serializers.ChoiceField(choices=jobs.MODES, required=False, default=Job.DURABLE)


class JobCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[Job.QUEUED])
    url = serializers.CharField()


class ProgressSerializer(serializers.Serializer):
    complete = serializers.IntegerField()
    pruned = serializers.IntegerField()
    failed = serializers.IntegerField()
    running = serializers.IntegerField()
    n_trials = serializers.IntegerField()


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    study = serializers.IntegerField()
    objective = serializers.CharField()
    mode = serializers.ChoiceField(choices=jobs.MODES)
    status = serializers.ChoiceField(choices=[s for s, _ in Job.STATUS_CHOICES])
    progress = ProgressSerializer()
    best_value = ObjectiveValueField(allow_null=True)
    n_trials = serializers.IntegerField()
    timeout = serializers.FloatField(allow_null=True)
    concurrency = serializers.IntegerField()
    delay = serializers.FloatField()
    max_failed_trials = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    heartbeat = serializers.DateTimeField(allow_null=True)
    stop_reason = serializers.CharField(
        allow_blank=True,
        help_text="n_trials, timeout, cancelled, max_failed_trials, workers_died or error.",
    )
    error = serializers.CharField(allow_blank=True)
    url = serializers.CharField()


class ObjectiveSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(choices=["builtin", "sklearn", "project", "command"])
    directions = serializers.ListField(child=serializers.ChoiceField(["minimize", "maximize"]))
    search_space = serializers.DictField(help_text="The default search space.")
    options = serializers.DictField()


JOB_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The job's id.")
STUDY_ID = OpenApiParameter("study_id", int, OpenApiParameter.PATH, description="The study's id.")
CONFLICT = {409: OpenApiResponse(description="The job has already ended.")}


class JobAPIViewSet(APIViewSet):
    # Any signed-in user reads; starting and cancelling check the study's owner.
    permission_classes = [IsAuthenticated]


class ObjectiveViewSet(JobAPIViewSet):
    @extend_schema(
        summary="Objectives the workers can run",
        responses={200: ObjectiveSerializer(many=True), **ERRORS},
    )
    def list(self, request: Request) -> Response:
        objectives = [info.to_dict() for info in get_objectives().values()]
        page = self.paginate_queryset(objectives)
        return self.get_paginated_response(page)


class StudyJobViewSet(JobAPIViewSet):
    def study(self) -> Study:
        study = Study.objects.filter(pk=self.kwargs["study_id"]).first()
        if study is None:
            raise NotFound("No such study.")
        return study

    @extend_schema(
        summary="Jobs of a study, newest first",
        parameters=[STUDY_ID],
        responses={200: JobSerializer(many=True), **ERRORS},
    )
    def list(self, request: Request, study_id: str) -> Response:
        page = self.paginate_queryset(self.study().jobs.select_related("study"))
        return self.get_paginated_response([job.to_dict() for job in page])

    @extend_schema(
        summary="Run trials on the workers",
        description="Returns at once with the job's id; poll its url for progress.",
        parameters=[STUDY_ID],
        request=JobRequestSerializer,
        responses={202: JobCreatedSerializer, **ERRORS},
    )
    def create(self, request: Request, study_id: str) -> Response:
        study = self.study()
        if not study.can_edit(request.user):
            raise PermissionDenied("Only the study's owner or staff can run jobs on it.")
        data = request.data
        if not isinstance(data, dict):
            raise ConfigError("non_field_errors", "the body must be a JSON object")
        unknown = sorted(set(data) - set(JOB_FIELDS))
        if unknown:
            raise ConfigError(unknown[0], f"is not an option of a job ({', '.join(JOB_FIELDS)})")
        if "n_trials" not in data:
            raise ConfigError("n_trials", "is required")
        options = {key: data[key] for key in JOB_FIELDS if key in data}
        job = jobs.start_job(study, request.user, **options)
        body = {"id": job.pk, "status": job.status, "url": job.get_api_url()}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class JobViewSet(JobAPIViewSet):
    queryset = Job.objects.select_related("study")
    pagination_class = None

    @extend_schema(
        summary="A job: status, progress, best value so far",
        parameters=[JOB_ID],
        responses={200: JobSerializer, **ERRORS},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_object().to_dict())

    @extend_schema(
        summary="Cancel a job",
        description="Workers stop within one trial; a running command trial is killed.",
        parameters=[JOB_ID],
        request=None,
        responses={200: JobSerializer, **ERRORS, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        if not job.study.can_edit(request.user):
            raise PermissionDenied("Only the study's owner or staff can cancel its jobs.")
        if not job.cancel() and job.status != Job.CANCELLED:
            return Response(
                {"detail": f"The job has already ended ({job.status})."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(job.to_dict())
