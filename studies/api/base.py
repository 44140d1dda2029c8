"""What every API view shares: the viewset base, parsers, pagination, errors and their handler."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import filters, parsers, status, viewsets
from rest_framework.decorators import api_view, permission_classes, schema
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.metadata import SimpleMetadata
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from studies.api.permissions import CanEditToWrite, TokenScope
from studies.api.serializers import config_error
from studies.config.errors import ConfigError
from studies.config.study import check_depth, field_name

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
    """JSON, also with NaN and Infinity as Python's json.dumps writes them.

    Non-finite numbers are legitimate in tell and report values; where they are
    not (options, search spaces) the validators refuse them. Every body is held
    to HUB_MAX_JSON_DEPTH below its top-level keys, whatever the endpoint does
    with it: nothing deeper can reach a recursive walk or be stored.
    """

    strict = False

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        try:
            if isinstance(data, dict):
                for key, value in data.items():
                    check_depth(field_name(str(key)), value)
            elif isinstance(data, list):
                for item in data:
                    check_depth("non_field_errors", item)
        except ConfigError as e:
            raise config_error(e) from None
        return data


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
    permission_classes = [IsAuthenticated, TokenScope, CanEditToWrite]
    parser_classes = [JSONParser]
    pagination_class = Pagination
    lookup_value_regex = ID

    def get_exception_handler(self) -> Any:
        return api_exception_handler


ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="{field: [message]}"),
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="Not signed in."),
    403: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="You may read this but not change it, or your token's scope is read.",
    ),
    404: OpenApiResponse(OpenApiTypes.OBJECT, description="No such id, or not one you may read."),
}
CONFLICT = {409: OpenApiResponse(OpenApiTypes.OBJECT, description="The trial is not running.")}


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([])
@schema(None)
def not_found(request: Request, path: str) -> Response:
    # Unknown paths under /api/ answer in JSON, like every other API error.
    return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
