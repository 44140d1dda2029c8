"""Teams and their members: create a team, list one's teams, manage members.

A team one is not a member of is a 404 like one that does not exist (staff see
every team). Only the team's admins (and staff) change its members; anyone may
leave. The last admin cannot be demoted or removed: that is a 409.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count, OuterRef, QuerySet, Subquery
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from studies.api.base import ERRORS, APIViewSet
from studies.api.permissions import TokenScope
from studies.models import Membership, Team
from studies.models.team import ROLES, TEAM_NAME_MAX_LENGTH
from studies.teams import (
    Conflict,
    NoSuchTeam,
    do_add_member,
    do_change_role,
    do_create_team,
    do_remove_member,
    team_for,
    teams_of,
)

TEAM_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The team's id.")
USERNAME = OpenApiParameter(
    "username", str, OpenApiParameter.PATH, description="The member's username."
)
# Django's usernames: letters, digits and @.+-_, at most 150 characters.
USERNAME_PATTERN = r"[\w.@+-]{1,150}"
NO_SUCH_TEAM = "No such team, or not one of yours."
LAST_ADMIN = {409: OpenApiResponse(description="The change would leave the team without an admin.")}


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        read_only_fields = fields


class TeamSerializer(serializers.ModelSerializer):
    n_members = serializers.IntegerField(read_only=True)
    my_role = serializers.CharField(
        read_only=True, allow_null=True, help_text="Your role; null for staff outside the team."
    )

    class Meta:
        model = Team
        fields = ["id", "name", "created_at", "n_members", "my_role"]
        read_only_fields = fields


class TeamDetailSerializer(TeamSerializer):
    members = serializers.SerializerMethodField()

    class Meta(TeamSerializer.Meta):
        fields = [*TeamSerializer.Meta.fields, "members"]
        read_only_fields = fields

    def get_members(self, team: Team) -> list[dict[str, Any]]:
        members = team.memberships.select_related("user")[: settings.HUB_MAX_TEAM_MEMBERS]
        return MemberSerializer(members, many=True).data


class NewTeamSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=TEAM_NAME_MAX_LENGTH)


class NewMemberSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ROLES)


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)


def conflict(e: Conflict) -> Response:
    return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)


class TeamViewSet(APIViewSet):
    permission_classes = [IsAuthenticated, TokenScope]
    serializer_class = TeamSerializer

    def get_queryset(self) -> QuerySet[Team]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, with no user
            return Team.objects.none()
        # Subqueries: teams_of joins the memberships already, to the user's own.
        members = Membership.objects.filter(team=OuterRef("pk"))
        return teams_of(self.request.user).annotate(
            n_members=Subquery(
                members.order_by().values("team").annotate(n=Count("pk")).values("n")
            ),
            my_role=Subquery(members.filter(user_id=self.request.user.pk).values("role")[:1]),
        )

    def team(self, pk: str) -> Team:
        try:
            return team_for(self.request.user, int(pk))
        except NoSuchTeam:
            raise NotFound(NO_SUCH_TEAM) from None

    @extend_schema(
        summary="Your teams (staff: every team)",
        responses={200: TeamSerializer(many=True), **ERRORS},
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        context = self.get_serializer_context()
        return self.get_paginated_response(TeamSerializer(page, many=True, context=context).data)

    @extend_schema(
        summary="Create a team; you are its first admin",
        request=NewTeamSerializer,
        responses={201: TeamDetailSerializer, 400: ERRORS[400], 401: ERRORS[401]},
    )
    def create(self, request: Request) -> Response:
        serializer = NewTeamSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = do_create_team(request.user, serializer.validated_data["name"])
        return Response(self.team_data(team.pk), status=status.HTTP_201_CREATED)

    def team_data(self, pk: int) -> dict[str, Any]:
        """The team with its members, read with the list's own query (a 404 outside it)."""
        team = self.get_queryset().filter(pk=pk).first()
        if team is None:
            raise NotFound(NO_SUCH_TEAM)
        return TeamDetailSerializer(team, context=self.get_serializer_context()).data

    @extend_schema(
        summary="A team with its members",
        parameters=[TEAM_ID],
        responses={200: TeamDetailSerializer, 401: ERRORS[401], 404: ERRORS[404]},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.team_data(int(pk)))

    @extend_schema(
        summary="Add a member (team admins)",
        parameters=[TEAM_ID],
        request=NewMemberSerializer,
        responses={201: MemberSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def members(self, request: Request, pk: str) -> Response:
        team = self.team(pk)
        serializer = NewMemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        membership = do_add_member(team, request.user, data["username"], data["role"])
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["PATCH"],
        summary="Change a member's role (team admins)",
        parameters=[TEAM_ID, USERNAME],
        request=RoleSerializer,
        responses={200: MemberSerializer, **ERRORS, **LAST_ADMIN},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Remove a member (team admins; anyone may remove themselves)",
        parameters=[TEAM_ID, USERNAME],
        request=None,
        responses={204: None, **ERRORS, **LAST_ADMIN},
    )
    @action(
        detail=True,
        methods=["patch", "delete"],
        url_path=f"members/(?P<username>{USERNAME_PATTERN})",
    )
    def member(self, request: Request, pk: str, username: str) -> Response:
        team = self.team(pk)
        if not team.memberships.filter(user__username=username).exists():
            raise NotFound(f"{username!r} is not a member of team {team.name!r}.")
        try:
            if request.method == "DELETE":
                do_remove_member(team, request.user, username)
                return Response(status=status.HTTP_204_NO_CONTENT)
            serializer = RoleSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            role = serializer.validated_data["role"]
            membership = do_change_role(team, request.user, username, role)
        except Conflict as e:
            return conflict(e)
        return Response(MemberSerializer(membership).data)
