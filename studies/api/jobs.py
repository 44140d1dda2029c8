"""Jobs and objectives over HTTP: start N trials on the workers, poll, cancel.

JobSerializer validates a job's options (studies.jobs.options, as the run form
does) and starts it through studies.actions; a bad request is
``400 {field: [message]}`` naming every invalid field, and queues nothing. A user
who already has HUB_MAX_ACTIVE_JOBS_PER_USER active jobs (or whose study's team
has HUB_MAX_ACTIVE_JOBS_PER_TEAM) gets a 429 naming the limit.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from studies.actions import do_cancel_job
from studies.api.base import ERRORS, APIViewSet
from studies.api.job_serializers import JobCreatedSerializer, JobSerializer, ObjectiveSerializer
from studies.api.permissions import TokenScope
from studies.jobs.base import TooManyJobs
from studies.models import Job, Study
from studies.objectives.registry import get_objectives

WRITERS_TEXT = "the study's owner, its team's editors or staff"
JOB_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The job's id.")
STUDY_ID = OpenApiParameter("study_id", int, OpenApiParameter.PATH, description="The study's id.")
CONFLICT = {409: OpenApiResponse(description="The job has already ended.")}
TOO_MANY = {
    429: OpenApiResponse(
        description="The user (HUB_MAX_ACTIVE_JOBS_PER_USER) or the study's team "
        "(HUB_MAX_ACTIVE_JOBS_PER_TEAM) already has its limit of queued or running jobs."
    )
}


class JobAPIViewSet(APIViewSet):
    # Those who may read the study read; starting and cancelling check Study.can_edit.
    permission_classes = [IsAuthenticated, TokenScope]
    serializer_class = JobSerializer


class ObjectiveViewSet(JobAPIViewSet):
    serializer_class = ObjectiveSerializer

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
        study = Study.objects.readable_by(self.request.user).filter(pk=self.kwargs["study_id"])
        study = study.first()
        if study is None:
            raise NotFound("No such study.")
        return study

    @extend_schema(
        summary="Jobs of a study, newest first",
        parameters=[STUDY_ID],
        responses={200: JobSerializer(many=True), **ERRORS},
    )
    def list(self, request: Request, study_id: str) -> Response:
        jobs = Job.objects.filter(study=self.study()).select_related("study")
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(JobSerializer(page, many=True).data)

    @extend_schema(
        summary="Run trials on the workers",
        description="Returns at once with the job's id; poll its url for progress.",
        parameters=[STUDY_ID],
        request=JobSerializer,
        responses={202: JobCreatedSerializer, **ERRORS, **TOO_MANY},
    )
    def create(self, request: Request, study_id: str) -> Response:
        study = self.study()
        serializer = JobSerializer(data=request.data, context={"study": study, "request": request})
        if not study.can_edit(request.user):
            # Before validation: someone else's study is a 403 whatever the body.
            self.permission_denied(request, f"Only {WRITERS_TEXT} can run jobs on it.")
        serializer.is_valid(raise_exception=True)
        try:
            job = serializer.save()
        except TooManyJobs as e:
            detail = {"detail": str(e), "limit": e.limit, "active": e.active}
            return Response(detail, status=status.HTTP_429_TOO_MANY_REQUESTS)
        body = {"id": job.pk, "status": job.status, "url": job.get_api_url()}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class JobViewSet(JobAPIViewSet):
    pagination_class = None

    def get_queryset(self) -> QuerySet[Job]:
        readable = Study.objects.readable_by(self.request.user)
        return Job.objects.filter(study__in=readable).select_related("study")

    @extend_schema(
        summary="A job: status, progress, best value so far",
        parameters=[JOB_ID],
        responses={200: JobSerializer, **ERRORS},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(JobSerializer(self.get_object()).data)

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
        if not do_cancel_job(job, request.user) and job.status != Job.CANCELLED:
            return Response(
                {"detail": f"The job has already ended ({job.status})."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(JobSerializer(job).data)
