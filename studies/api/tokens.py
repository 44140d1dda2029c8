"""Exchange a username and password for an API token."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import parsers, serializers
from rest_framework.authtoken import views as authtoken_views

from studies.api.base import ERRORS, JSONParser, api_exception_handler


class AuthTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField()


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
