"""Studies over HTTP: list, create, change, delete; ask and enqueue; CSV and JSON exports."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import filters, mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from studies.actions import do_delete_study
from studies.api import ask_tell
from studies.api.base import CONFLICT, ERRORS, APIViewSet, SearchFilter
from studies.api.exports import csv_rows, json_rows
from studies.api.serializers import (
    AskResponseSerializer,
    AskSerializer,
    EnqueueResponseSerializer,
    EnqueueSerializer,
    StudyDetailSerializer,
    StudySerializer,
    TrialSerializer,
)
from studies.models import Study, json_safe

STUDY_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The study's id.")


@extend_schema_view(
    list=extend_schema(
        summary="List studies", responses={200: StudySerializer(many=True), **ERRORS}
    ),
    create=extend_schema(
        summary="Create a study",
        request=StudySerializer,
        responses={201: StudyDetailSerializer, **ERRORS},
    ),
    retrieve=extend_schema(
        summary="A study with trial counts and its best trial(s)",
        parameters=[STUDY_ID],
        responses={200: StudyDetailSerializer, **ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a study",
        parameters=[STUDY_ID],
        request=StudySerializer,
        responses={200: StudyDetailSerializer, **ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a study and its trials",
        parameters=[STUDY_ID],
        responses={204: None, **ERRORS},
    ),
)
class StudyViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    APIViewSet,
):
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends = [SearchFilter, filters.OrderingFilter]
    search_fields = ["name"]
    ordering_fields = ["id", "name", "created_at", "updated_at", "n_trials"]
    ordering = ["-id"]

    def get_queryset(self) -> Any:
        readable = Study.objects.readable_by(self.request.user)
        if self.action in ("ask", "enqueue"):
            return readable  # the hot path: nothing here shows the owner
        return readable.select_related("owner", "team")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return StudySerializer if self.action == "list" else StudyDetailSerializer

    def perform_destroy(self, instance: Study) -> None:
        do_delete_study(instance, self.request.user)

    @extend_schema(
        summary="Ask for a trial",
        description="Starts a trial (or pops an enqueued one) with the study's search space "
        "sampled, conditions honoured; a search_space in the body is sampled instead.",
        parameters=[STUDY_ID],
        request=AskSerializer,
        responses={201: AskResponseSerializer, **ERRORS, **CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def ask(self, request: Request, pk: str) -> Response:
        study = self.get_object()
        body = AskSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        trial = ask_tell.ask(study, body.validated_data.get("search_space"))
        return Response(trial, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Enqueue a trial with fixed parameters",
        parameters=[STUDY_ID],
        request=EnqueueSerializer,
        responses={201: EnqueueResponseSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def enqueue(self, request: Request, pk: str) -> Response:
        study = self.get_object()
        body = EnqueueSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        params = body.validated_data["params"]
        trial = ask_tell.enqueue(study, params, body.validated_data.get("user_attrs") or {})
        data = {"trial_id": trial.pk, "number": trial.number, "state": trial.state_name}
        return Response({**data, "params": json_safe(params)}, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Every trial as CSV",
        parameters=[STUDY_ID],
        responses={(200, "text/csv"): OpenApiTypes.STR, **ERRORS},
    )
    def export_csv(self, request: Request, pk: str) -> StreamingHttpResponse:
        study = self.get_object()
        response = StreamingHttpResponse(csv_rows(study), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-trials.csv"'
        return response

    @extend_schema(
        summary="Every trial as JSON",
        parameters=[STUDY_ID],
        responses={200: TrialSerializer(many=True), **ERRORS},
    )
    def export_json(self, request: Request, pk: str) -> StreamingHttpResponse:
        study = self.get_object()
        response = StreamingHttpResponse(json_rows(study), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-trials.json"'
        return response
