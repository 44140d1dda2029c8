"""The audit trail, read-only: ``GET /api/audit/?study=&team=``, newest first.

Who sees which entries:

- ``?study=<id>``: the study's entries, to anyone who may read the study (its
  page shows them as "Activity"). A deleted study's entries stay visible to the
  admins of its team, to staff, and each actor sees their own. A study one may
  not read, and one with nothing one may see, is a 404.
- ``?team=<id>``: the team's entries, to its admins and staff; a member who is
  not an admin gets a 403, anyone else a 404 (the team's existence is private).
- neither: one's own actions and those in the teams one administers; staff: all.

The client address is shown to staff only.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from studies.api.base import ERRORS, APIViewSet
from studies.models import AuditEntry, Membership, Study
from studies.models.team import ADMIN, role_in
from studies.teams import NoSuchTeam, team_for


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text="The username; '' for the hub.")
    study = serializers.IntegerField(source="study_id", allow_null=True)
    team = serializers.IntegerField(source="team_id", allow_null=True)
    detail = serializers.JSONField(read_only=True, help_text="What changed, by action.")
    address = serializers.SerializerMethodField(help_text="The client's address (staff only).")

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "actor",
            "action",
            "target",
            "via",
            "study",
            "team",
            "detail",
            "address",
        ]
        read_only_fields = fields

    def get_address(self, entry: AuditEntry) -> str | None:
        return entry.address if self.context["request"].user.is_staff else None


def own_filter(user: Any) -> Q:
    """One's own actions and those in the teams one administers."""
    admin_of = Membership.objects.filter(user_id=user.pk, role=ADMIN).values("team_id")
    return Q(actor_id=user.pk) | Q(team_id__in=admin_of)


def number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValidationError({name: ["must be an id (a whole number)"]})
    return int(value)


def audit_entries(request: Request) -> QuerySet[AuditEntry]:
    user = request.user
    entries = AuditEntry.objects.all()
    study_id, team_id = number(request, "study"), number(request, "team")
    if team_id is not None:
        try:
            team_for(user, team_id)
        except NoSuchTeam:
            raise NotFound("No such team, or not one of yours.") from None
        if not (user.is_staff or role_in(user, team_id) == ADMIN):
            raise PermissionDenied("Only the team's admins see its activity.")
        entries = entries.filter(team_id=team_id)
    if study_id is not None:
        entries = entries.filter(study_id=study_id)
        readable = Study.objects.readable_by(user).filter(pk=study_id).exists()
        if not readable:
            if Study.objects.filter(pk=study_id).exists():
                raise NotFound("No such study, or not one you may read.")
            if not user.is_staff:  # deleted: as for no study
                entries = entries.filter(own_filter(user))
            if not entries.exists():
                raise NotFound("No such study, or not one you may read.")
    elif team_id is None and not user.is_staff:
        entries = entries.filter(own_filter(user))
    return entries


STUDY = OpenApiParameter("study", int, description="Only this study's entries.")
TEAM = OpenApiParameter("team", int, description="Only this team's entries (its admins).")


class AuditViewSet(APIViewSet):
    permission_classes = [IsAuthenticated]
    serializer_class = AuditEntrySerializer
    filter_backends: list = []  # newest first; ?study= and ?team= are the filters

    @extend_schema(
        summary="The audit trail, newest first",
        parameters=[STUDY, TEAM],
        responses={200: AuditEntrySerializer(many=True), **ERRORS},
    )
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(audit_entries(request))
        context = self.get_serializer_context()
        data = AuditEntrySerializer(page, many=True, context=context).data
        return self.get_paginated_response(data)
