"""Exchange a username and password for a new API token.

Failed attempts count towards django-axes' lockout (per address and per
username, in the database): a locked-out client gets 429 with Retry-After,
even with the right password, until the cool-off has passed.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import parsers, serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from studies.api.base import ERRORS, JSONParser, api_exception_handler
from studies.lockout import lockout_response
from studies.models import ApiToken
from studies.models.token import MAX_EXPIRY_DAYS, MAX_NAME_LENGTH, token_limit_error

LOCKED = {
    429: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="Too many failed logins for this address or username; see Retry-After.",
    )
}


class NewTokenFields(serializers.Serializer):
    """What a new token may be given: a name and an expiry."""

    name = serializers.CharField(max_length=MAX_NAME_LENGTH, required=False)
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=MAX_EXPIRY_DAYS, required=False, allow_null=True
    )


class LoginSerializer(AuthTokenSerializer, NewTokenFields):
    pass


class AuthTokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The key; it is shown only this once.")
    id = serializers.IntegerField()
    name = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


@extend_schema(
    summary="Exchange a username and password for a new API token",
    request=LoginSerializer,
    responses={200: AuthTokenResponseSerializer, 400: ERRORS[400], **LOCKED},
)
class ObtainAuthToken(APIView):
    """POST username and password (and optionally name, expires_in_days), get a new token."""

    parser_classes = [JSONParser, parsers.FormParser, parsers.MultiPartParser]
    # The credentials are in the body. Without this, a client that also carries
    # a session cookie (a script that logged in first) fails DRF's CSRF check.
    authentication_classes: list = []
    permission_classes: list = []

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            # django-axes marked the request while authenticating it.
            if getattr(request, "axes_locked_out", False):
                credentials = {"username": serializer.initial_data.get("username")}
                return lockout_response(request, None, credentials)
            return Response(serializer.errors, status=status.HTTP_400_BAD_REQUEST)
        user = serializer.validated_data["user"]
        if error := token_limit_error(user):
            return Response({"tokens": [error]}, status=status.HTTP_400_BAD_REQUEST)
        name = serializer.validated_data.get("name") or "API login"
        token, key = ApiToken.issue(user, name, serializer.validated_data.get("expires_in_days"))
        body = {"token": key, "id": token.pk, "name": token.name, "expires_at": token.expires_at}
        return Response(AuthTokenResponseSerializer(body).data)
