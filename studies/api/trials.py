"""Trials over HTTP: a study's trials (filtered, ordered), one trial, suggest / report / tell."""

from __future__ import annotations

from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from studies.api import ask_tell
from studies.api.base import CONFLICT, ERRORS, APIViewSet
from studies.api.filters import TrialFilter, TrialOrdering
from studies.api.serializers import (
    ReportResponseSerializer,
    ReportSerializer,
    SuggestResponseSerializer,
    SuggestSerializer,
    TellSerializer,
    TrialSerializer,
)
from studies.models import Study, Trial

TRIAL_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The trial's id.")


@extend_schema_view(
    list=extend_schema(
        summary="A study's trials",
        parameters=[OpenApiParameter("study_id", int, OpenApiParameter.PATH)],
        responses={200: TrialSerializer(many=True), **ERRORS},
    )
)
class StudyTrialViewSet(mixins.ListModelMixin, APIViewSet):
    serializer_class = TrialSerializer
    filterset_class = TrialFilter
    filter_backends = [DjangoFilterBackend, TrialOrdering]
    ordering = ["number"]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Trial.objects.none()
        study_id = self.kwargs["study_id"]
        if not Study.objects.readable_by(self.request.user).filter(pk=study_id).exists():
            raise NotFound("No such study.")
        return Trial.objects.filter(study_id=study_id)


@extend_schema_view(
    retrieve=extend_schema(
        summary="A trial", parameters=[TRIAL_ID], responses={200: TrialSerializer, **ERRORS}
    )
)
class TrialViewSet(mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = TrialSerializer
    filter_backends: list = []

    def get_queryset(self) -> Any:
        readable = Study.objects.readable_by(self.request.user)
        return Trial.objects.filter(study__in=readable).select_related("study")

    @extend_schema(
        summary="Suggest a parameter (define-by-run)",
        description="Returns the trial's value for the name; asking again returns the same value.",
        parameters=[TRIAL_ID],
        request=SuggestSerializer,
        responses={200: SuggestResponseSerializer, **ERRORS, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def suggest(self, request: Request, pk: str) -> Response:
        trial = self.get_object()
        body = SuggestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        value = ask_tell.suggest_param(trial, data["name"], data["distribution"])
        return Response({"value": value})

    @extend_schema(
        summary="Report an intermediate value",
        description="Returns whether the study's pruner would prune the trial now.",
        parameters=[TRIAL_ID],
        request=ReportSerializer,
        responses={200: ReportResponseSerializer, **ERRORS, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def report(self, request: Request, pk: str) -> Response:
        trial = self.get_object()
        body = ReportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        return Response({"should_prune": ask_tell.report(trial, data["step"], data["value"])})

    @extend_schema(
        summary="Finish a trial",
        description="values (one per direction) complete it, NaN or null fails it; "
        "state pruned or fail ends it without values. Telling a finished trial the "
        "same outcome again returns 200; a different one is a 409.",
        parameters=[TRIAL_ID],
        request=TellSerializer,
        responses={200: TrialSerializer, **ERRORS, 409: CONFLICT[409]},
    )
    @action(detail=True, methods=["post"])
    def tell(self, request: Request, pk: str) -> Response:
        trial = self.get_object()
        body = TellSerializer(data=request.data, context={"study": trial.study})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        trial = ask_tell.tell(trial, data.get("values"), data.get("state"))
        return Response(TrialSerializer(trial).data)
