"""Teams, their members' roles, and who may read or change a study.

A study belongs to its owner alone (``team`` is null) or to a team, and is
``private`` (the owner, or the team's members) or ``internal`` (every signed-in
user reads it). Writes need the owner of a personal study, or an editor or
admin of the study's team. Staff read and change everything.

An API token narrows its user's rights: a ``read`` token never writes, and a
token limited to a team sees only that team's studies. The authentication puts
those limits on the user object it returns (``hub_token_scope``,
``hub_token_team``); a signed-in browser session has none.

Every face (pages, API, charts, exports, the remote storage) asks the same
three things here: ``Study.objects.readable_by(user)``, ``read_rights`` and
``write_rights``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

VIEWER, EDITOR, ADMIN = "viewer", "editor", "admin"
ROLES = (VIEWER, EDITOR, ADMIN)
WRITERS = (EDITOR, ADMIN)
PRIVATE, INTERNAL = "private", "internal"
VISIBILITIES = (PRIVATE, INTERNAL)
READ, WRITE = "read", "write"
SCOPES = (READ, WRITE)
TEAM_NAME_MAX_LENGTH = 100


class Team(models.Model):
    name = models.CharField(max_length=TEAM_NAME_MAX_LENGTH, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def role_of(self, user: Any) -> str | None:
        return role_in(user, self.pk)


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=[(r, r) for r in ROLES], default=VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


def token_limits(user: Any) -> tuple[str, int | None]:
    """The scope and team the request's token allows (a session: write, any team)."""
    return getattr(user, "hub_token_scope", WRITE), getattr(user, "hub_token_team", None)


def role_in(user: Any, team_id: int | None) -> str | None:
    """``user``'s role in the team, or None (one indexed query)."""
    if team_id is None or not getattr(user, "pk", None):
        return None
    found = Membership.objects.filter(team_id=team_id, user_id=user.pk).values_list("role")
    return next(iter(found), (None,))[0]


def team_ids_of(user: Any) -> models.QuerySet:
    """The ids of the user's teams, as a subquery."""
    return Membership.objects.filter(user_id=user.pk).values("team_id")


def read_rights(user: Any, owner_id: int | None, team_id: int | None, visibility: str) -> bool:
    """Whether ``user`` may read a study with these columns."""
    if not getattr(user, "is_authenticated", False):
        return False
    token_team = token_limits(user)[1]
    if token_team is not None and team_id != token_team:
        return False
    if user.is_staff or visibility == INTERNAL:
        return True
    if team_id is None:
        return owner_id == user.pk
    return role_in(user, team_id) is not None


def write_rights(user: Any, owner_id: int | None, team_id: int | None) -> bool:
    """Whether ``user`` may change a study with these columns (and run jobs on it)."""
    if not getattr(user, "is_authenticated", False):
        return False
    scope, token_team = token_limits(user)
    if scope != WRITE or (token_team is not None and team_id != token_team):
        return False
    if user.is_staff:
        return True
    if team_id is None:
        return owner_id == user.pk
    return role_in(user, team_id) in WRITERS


def readable_filter(user: Any) -> models.Q:
    """The studies ``user`` may read, as a filter on Study."""
    if not getattr(user, "is_authenticated", False):
        return models.Q(pk__in=[])
    token_team = token_limits(user)[1]
    narrowed = models.Q() if token_team is None else models.Q(team_id=token_team)
    if user.is_staff:
        return narrowed
    return narrowed & (
        models.Q(visibility=INTERNAL)
        | models.Q(team=None, owner_id=user.pk)
        | models.Q(team_id__in=team_ids_of(user))
    )
