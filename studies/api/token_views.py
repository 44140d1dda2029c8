"""A user's own API tokens: list, create (the key is in that answer only), revoke.

Every query is of the requesting user's tokens, so another user's token is a
404 like one that does not exist; revoked tokens are gone from the list.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from studies.api.base import ERRORS, APIViewSet
from studies.api.tokens import NewTokenFields
from studies.models import ApiToken
from studies.models.team import SCOPES, WRITE
from studies.models.token import MAX_EXPIRY_DAYS, MAX_NAME_LENGTH, token_limit_error
from studies.teams import NoSuchTeam, team_for

TOKEN_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The token's id.")


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "scope",
            "team",
            "created_at",
            "last_used_at",
            "expires_at",
        ]
        read_only_fields = fields


class NewApiTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(help_text="Send as 'Authorization: Token <key>'; shown only once.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class CreateTokenSerializer(NewTokenFields):
    name = serializers.CharField(max_length=MAX_NAME_LENGTH)
    scope = serializers.ChoiceField(
        choices=SCOPES, default=WRITE, help_text="read: the token may only read."
    )
    team = serializers.IntegerField(
        required=False, allow_null=True, help_text="Limit the token to this team's studies."
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text=f"ISO 8601; within {MAX_EXPIRY_DAYS} days. Or give expires_in_days.",
    )

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        now = timezone.now()
        if value is not None and value <= now:
            raise serializers.ValidationError("must be in the future")
        if value is not None and value > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise serializers.ValidationError(f"must be within {MAX_EXPIRY_DAYS} days")
        return value

    def validate(self, data: dict) -> dict:
        if data.get("expires_at") and data.get("expires_in_days"):
            message = "give expires_at or expires_in_days, not both"
            raise serializers.ValidationError({"expires_at": [message]})
        return data


class ApiTokenViewSet(APIViewSet):
    permission_classes = [IsAuthenticated]
    serializer_class = ApiTokenSerializer

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, with no user
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).unrevoked()

    @extend_schema(
        summary="Your API tokens, newest first",
        responses={200: ApiTokenSerializer(many=True), **ERRORS},  # 404: a page past the end
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ApiTokenSerializer(page, many=True).data)

    @extend_schema(
        summary="Create an API token (the answer is the only time its key is shown)",
        request=CreateTokenSerializer,
        responses={201: NewApiTokenSerializer, 400: ERRORS[400], 401: ERRORS[401]},
    )
    def create(self, request: Request) -> Response:
        serializer = CreateTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if error := token_limit_error(request.user):
            return Response({"tokens": [error]}, status=status.HTTP_400_BAD_REQUEST)
        data = serializer.validated_data
        team = None
        if data.get("team") is not None:
            try:
                team = team_for(request.user, data["team"])
            except NoSuchTeam:
                message = f"{data['team']} is not a team of yours"
                return Response({"team": [message]}, status=status.HTTP_400_BAD_REQUEST)
        token, key = ApiToken.issue(
            request.user,
            data["name"],
            data.get("expires_in_days"),
            expires_at=data.get("expires_at"),
            scope=data["scope"],
            team=team,
        )
        token.key = key
        return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke one of your API tokens; it stops working at once",
        parameters=[TOKEN_ID],
        responses={204: None, 401: ERRORS[401], 404: ERRORS[404]},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        self.get_object().revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)
