"""The REST API: studies, their trials, and ask / enqueue / suggest / report / tell.

Every write goes through Optuna on the shared DjangoStorage (studies.api.ask_tell);
reads come straight from the rows. Errors are DRF's ``{field: [message]}`` for
a 400, 403 for someone else's study, 404 for unknown ids, 409 for a trial in the
wrong state: never a 500.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import StreamingHttpResponse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import filters, mixins, parsers, serializers, status, viewsets
from rest_framework.authtoken import views as authtoken_views
from rest_framework.decorators import action, api_view, permission_classes, schema
from rest_framework.exceptions import APIException, NotFound, ParseError, ValidationError
from rest_framework.metadata import SimpleMetadata
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from studies.api import ask_tell
from studies.api.filters import TrialFilter, TrialOrdering
from studies.api.permissions import IsOwnerOrStaffToWrite
from studies.api.serializers import (
    AskResponseSerializer,
    AskSerializer,
    EnqueueResponseSerializer,
    EnqueueSerializer,
    ReportResponseSerializer,
    ReportSerializer,
    StudyDetailSerializer,
    StudySerializer,
    SuggestResponseSerializer,
    SuggestSerializer,
    TellSerializer,
    TrialSerializer,
    config_error,
)
from studies.models import Study, Trial, json_safe
from studies.search_space import ConfigError
from studies.storage import get_storage

# Ids beyond what a 64-bit column holds cannot exist; matching them in the URL
# makes them a 404 instead of a database overflow.
ID = "[0-9]{1,18}"


class TooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ConfigError):
        exc = config_error(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = TooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    return exception_handler(exc, context)


class SearchFilter(filters.SearchFilter):
    def get_search_terms(self, request: Request) -> list[str]:
        try:
            return super().get_search_terms(request)
        except ValidationError as e:  # a NUL character, which no database column holds
            raise ValidationError({self.search_param: e.detail}) from None


class JSONParser(parsers.JSONParser):
    """JSON, also with NaN and Infinity as Python's json.dumps writes them."""

    strict = False

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class AuthTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


class Metadata(SimpleMetadata):
    """OPTIONS names the view and its methods; /api/schema/ documents the bodies."""

    def determine_actions(self, request: Request, view: Any) -> dict:
        # DRF would build each POST serializer here, and views whose serializer
        # depends on the action (or has none) cannot answer that.
        return {}


class APIViewSet(viewsets.GenericViewSet):
    metadata_class = Metadata
    permission_classes = [IsAuthenticated, IsOwnerOrStaffToWrite]
    parser_classes = [JSONParser]
    pagination_class = Pagination
    lookup_value_regex = ID

    def get_exception_handler(self) -> Any:
        return api_exception_handler


STUDY_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The study's id.")
TRIAL_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The trial's id.")
ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="{field: [message]}"),
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="Not signed in."),
    403: OpenApiResponse(OpenApiTypes.OBJECT, description="Not the owner or staff."),
    404: OpenApiResponse(OpenApiTypes.OBJECT, description="No such id."),
}
NAME_TAKEN = ConfigError("name", "a study with this name already exists")
CONFLICT = {409: OpenApiResponse(OpenApiTypes.OBJECT, description="The trial is not running.")}


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
        if self.action in ("ask", "enqueue"):
            return Study.objects.all()  # the hot path: nothing here shows the owner
        studies = Study.objects.select_related("owner")
        # Counting a study's trials reads all of them: only where the answer shows them.
        # (A single study's counts come from one grouped query on the (study, state) index.)
        return studies.with_trial_counts() if self.action == "list" else studies

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return StudySerializer if self.action == "list" else StudyDetailSerializer

    def perform_create(self, serializer: serializers.Serializer) -> None:
        try:
            with transaction.atomic():
                serializer.save(owner=self.request.user)
        except IntegrityError:  # the same name created by another request just now
            raise config_error(NAME_TAKEN) from None

    def perform_update(self, serializer: serializers.Serializer) -> None:
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError:
            raise config_error(NAME_TAKEN) from None
        ask_tell.forget(serializer.instance.pk)

    def perform_destroy(self, instance: Study) -> None:
        # One transaction (Django's deletion collector), trials cascade.
        try:
            get_storage().delete_study(instance.pk)
        except KeyError:
            raise NotFound("No such study.") from None
        ask_tell.forget(instance.pk)

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


def _trials(study: Study) -> Iterator[Trial]:
    return study.trials.order_by("number").iterator(chunk_size=1000)


def json_rows(study: Study) -> Iterator[str]:
    yield "["
    for i, trial in enumerate(_trials(study)):
        yield ("," if i else "") + json.dumps(trial.to_dict(), allow_nan=False)
    yield "]"


def csv_rows(study: Study) -> Iterator[str]:
    # Columns as in optuna's trials_dataframe: a value column per objective,
    # then a column per parameter and user attribute seen in any trial.
    params: dict[str, None] = dict.fromkeys(study.search_space)
    attrs: dict[str, None] = {}
    for trial_params, trial_attrs in study.trials.values_list("params", "user_attrs"):
        params.update(dict.fromkeys(trial_params))
        attrs.update(dict.fromkeys(trial_attrs))
    if study.is_multi_objective:
        value_columns = [f"values_{i}" for i in range(len(study.directions))]
    else:
        value_columns = ["value"]
    header = ["number", "trial_id", "state", *value_columns, "datetime_start"]
    header += ["datetime_complete", "duration"]
    header += [f"params_{n}" for n in params] + [f"user_attrs_{k}" for k in attrs]

    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    yield line(header)
    for trial in _trials(study):
        data = trial.to_dict()
        values = data["values"] or []
        row = [data["number"], data["trial_id"], data["state"]]
        row += [values[i] if i < len(values) else "" for i in range(len(value_columns))]
        row += [data["datetime_start"], data["datetime_complete"], data["duration"]]
        row += [cell(data["params"].get(n)) for n in params]
        row += [cell(data["user_attrs"].get(k)) for k in attrs]
        yield line(row)


def cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value


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
        if not Study.objects.filter(pk=study_id).exists():
            raise NotFound("No such study.")
        return Trial.objects.filter(study_id=study_id)


@extend_schema_view(
    retrieve=extend_schema(
        summary="A trial", parameters=[TRIAL_ID], responses={200: TrialSerializer, **ERRORS}
    )
)
class TrialViewSet(mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = TrialSerializer
    queryset = Trial.objects.select_related("study")
    filter_backends: list = []

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
        return Response(trial.to_dict())


@extend_schema(
    summary="Exchange a username and password for an API token",
    responses={200: AuthTokenResponseSerializer, 400: ERRORS[400]},
)
class ObtainAuthToken(authtoken_views.ObtainAuthToken):
    """POST username and password, get {"token": ...} for "Authorization: Token <key>"."""

    parser_classes = [JSONParser, parsers.FormParser, parsers.MultiPartParser]
    # The credentials are in the body. Without this, a client that also carries
    # a session cookie (a script that logged in first) fails DRF's CSRF check.
    authentication_classes: list = []

    def get_exception_handler(self) -> Any:
        return api_exception_handler


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([])
@schema(None)
def not_found(request: Request, path: str) -> Response:
    # Unknown paths under /api/ answer in JSON, like every other API error.
    return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
