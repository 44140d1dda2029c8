"""Teams: create one, manage its members, and place studies in it.

Like studies/actions.py, each change is one function that pages, the API and
the admin call; each checks the user's rights first, writes in one transaction
and records itself in the audit trail. A team one is not a member of is a
"no such team" (the API's 404) for non-staff, so its existence stays private.

The rules of who may read or change a study are in studies/models/team.py.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from studies.config.errors import ConfigError
from studies.config.study import check_text
from studies.models import AuditEntry, Membership, Study, Team
from studies.models.team import (
    ADMIN,
    ROLES,
    TEAM_NAME_MAX_LENGTH,
    VISIBILITIES,
    WRITERS,
    role_in,
    token_limits,
)


class NoSuchTeam(LookupError):
    """No team with that id that the user may see (the API's 404)."""


class Conflict(Exception):
    """The change would leave the team without an admin (the API's 409)."""


def teams_of(user: Any) -> QuerySet[Team]:
    """The teams ``user`` sees: their own; staff see every team."""
    teams = Team.objects.all()
    token_team = token_limits(user)[1]
    if token_team is not None:
        teams = teams.filter(pk=token_team)
    if user.is_staff:
        return teams
    return teams.filter(memberships__user_id=user.pk)


def team_for(user: Any, team_id: Any) -> Team:
    """The team ``user`` sees with that id, or NoSuchTeam."""
    if isinstance(team_id, bool) or not isinstance(team_id, int):
        raise NoSuchTeam(team_id)
    team = teams_of(user).filter(pk=team_id).first()
    if team is None:
        raise NoSuchTeam(team_id)
    return team


def _check_admin(team: Team, user: Any) -> None:
    if token_limits(user)[0] != "write":
        raise PermissionDenied("This API token's scope is read: it may only read.")
    if not (user.is_staff or role_in(user, team.pk) == ADMIN):
        raise PermissionDenied(f"Only the admins of team {team.name!r} may manage its members.")


def clean_team_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name", "is required")
    name = name.strip()
    if len(name) > TEAM_NAME_MAX_LENGTH:
        raise ConfigError("name", f"must be at most {TEAM_NAME_MAX_LENGTH} characters")
    check_text("name", name)
    return name


def clean_role(role: Any) -> str:
    if role not in ROLES:
        raise ConfigError("role", f"must be one of {', '.join(ROLES)}")
    return role


def do_create_team(user: Any, name: Any) -> Team:
    """A new team with ``user`` as its first admin."""
    name = clean_team_name(name)
    if token_limits(user)[0] != "write":
        raise PermissionDenied("This API token's scope is read: it may only read.")
    limit = settings.HUB_MAX_TEAMS_PER_USER
    with transaction.atomic():
        mine = Membership.objects.filter(user_id=user.pk, role=ADMIN).count()
        if not user.is_staff and mine >= limit:
            raise ConfigError("name", f"you are an admin of {limit} teams, the most allowed")
        try:
            with transaction.atomic():
                team = Team.objects.create(name=name)
        except IntegrityError:
            raise ConfigError("name", f"a team named {name!r} already exists") from None
        Membership.objects.create(team=team, user_id=user.pk, role=ADMIN)
        AuditEntry.record(user, AuditEntry.TEAM_CREATED, f"team {team.name}", team_id=team.pk)
    return team


def _member(team: Team, username: Any) -> Membership:
    found = Membership.objects.filter(team=team, user__username=username).first()
    if found is None:
        raise ConfigError("username", f"{username!r} is not a member of team {team.name!r}")
    return found


def _check_not_last_admin(membership: Membership) -> None:
    if membership.role != ADMIN:
        return
    others = Membership.objects.filter(team_id=membership.team_id, role=ADMIN)
    # Hold the admins' rows: two admins demoting each other at once cannot both pass.
    if others.select_for_update().exclude(pk=membership.pk).count() == 0:
        raise Conflict("A team needs at least one admin: make another member admin first.")


def do_add_member(team: Team, user: Any, username: Any, role: Any) -> Membership:
    _check_admin(team, user)
    role = clean_role(role)
    if not isinstance(username, str):
        raise ConfigError("username", "must be a username")
    member = get_user_model().objects.filter(username=username, is_active=True).first()
    if member is None:
        raise ConfigError("username", f"no active user is named {username!r}")
    limit = settings.HUB_MAX_TEAM_MEMBERS
    with transaction.atomic():
        if Membership.objects.filter(team=team).count() >= limit:
            raise ConfigError("username", f"the team has {limit} members, the most allowed")
        try:
            with transaction.atomic():
                membership = Membership.objects.create(team=team, user=member, role=role)
        except IntegrityError:
            raise ConfigError("username", f"{username!r} is already a member") from None
        AuditEntry.record(
            user,
            AuditEntry.MEMBER_ADDED,
            f"{username} in team {team.name}",
            team_id=team.pk,
            member=username,
            role=role,
        )
    return membership


def do_change_role(team: Team, user: Any, username: Any, role: Any) -> Membership:
    _check_admin(team, user)
    role = clean_role(role)
    with transaction.atomic():
        membership = _member(team, username)
        if membership.role == role:
            return membership
        if role != ADMIN:
            _check_not_last_admin(membership)
        before, membership.role = membership.role, role
        membership.save(update_fields=["role"])
        AuditEntry.record(
            user,
            AuditEntry.ROLE_CHANGED,
            f"{username} in team {team.name}",
            team_id=team.pk,
            member=username,
            role=role,
            before=before,
        )
    return membership


def do_remove_member(team: Team, user: Any, username: Any) -> None:
    """Remove a member; their access ends with this transaction (rights are read per request)."""
    if not (getattr(user, "get_username", None) and user.get_username() == username):
        _check_admin(team, user)  # anyone may leave a team
    with transaction.atomic():
        membership = _member(team, username)
        _check_not_last_admin(membership)
        membership.delete()
        AuditEntry.record(
            user,
            AuditEntry.MEMBER_REMOVED,
            f"{username} in team {team.name}",
            team_id=team.pk,
            member=username,
            role=membership.role,
        )


def clean_placement(user: Any, data: dict[str, Any], instance: Study | None) -> dict[str, Any]:
    """``team`` (a Team or None) and ``visibility`` from ``data``, checked for ``user``.

    A study goes into a team whose editor or admin the user is (staff: any team);
    a token limited to a team puts new studies in that team. Moving a study out
    of its team is for the team's admins and staff, and gives it to the mover.
    """
    clean: dict[str, Any] = {}
    token_team = token_limits(user)[1]
    if "team" in data or (instance is None and token_team is not None):
        team_id = data.get("team", token_team)
        if team_id is None:
            current = instance.team_id if instance else None
            if current is not None and not (user.is_staff or role_in(user, current) == ADMIN):
                raise ConfigError("team", "only the team's admins may take a study out of it")
            if token_team is not None:
                raise ConfigError("team", "this API token may only place studies in its team")
            clean["team"] = None
            if current is not None:
                clean["owner"] = user
        elif instance is None or team_id != instance.team_id:
            try:
                team = team_for(user, team_id)
            except NoSuchTeam:
                raise ConfigError("team", f"{team_id!r} is not a team of yours") from None
            if not (user.is_staff or role_in(user, team.pk) in WRITERS):
                raise ConfigError("team", f"you are not an editor of team {team.name!r}")
            clean["team"] = team
    if "visibility" in data:
        if data["visibility"] not in VISIBILITIES:
            raise ConfigError("visibility", f"must be one of {', '.join(VISIBILITIES)}")
        clean["visibility"] = data["visibility"]
    return clean
