"""The teams pages: one's teams (and creating one), a team's page, and changing its members.

Each change is its own small POST that redirects back to the team's page. The
rules are in ``studies.teams``; a view only turns its answers into pages: bad
input is a 400 beside the input it is about, a refusal a 403, leaving a team
without an admin a 409, and a team one is not in (staff: any team) a 404.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studies.config.errors import ConfigError
from studies.models import AuditEntry, Membership, Study, Team
from studies.models.team import ADMIN, ROLES, TEAM_NAME_MAX_LENGTH, VIEWER, role_in
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

TEAMS_SHOWN = 200
MEMBERS_SHOWN = settings.HUB_MAX_TEAM_MEMBERS
STUDIES_SHOWN = 100


def role_select() -> forms.CharField:
    # A plain CharField: an unknown role reaches studies.teams, which explains it
    # the same way the API does.
    return forms.CharField(required=False, widget=forms.Select(choices=[(r, r) for r in ROLES]))


class TeamForm(forms.Form):
    name = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"maxlength": TEAM_NAME_MAX_LENGTH}),
        help_text="You become its first admin.",
    )


class MemberForm(forms.Form):
    username = forms.CharField(required=False)
    role = role_select()


def add_errors(form: forms.Form, error: ConfigError) -> None:
    """Each mistake beside its input; one about something the form has no input for, above it."""
    for one in error.errors:
        form.add_error(one.field if one.field in form.fields else None, one.message)


def team_or_404(request: HttpRequest, pk: int) -> Team:
    try:
        return team_for(request.user, pk)
    except NoSuchTeam:
        raise Http404("No such team.") from None


# One's teams


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            team = do_create_team(request.user, form.cleaned_data["name"])
        except ConfigError as e:
            add_errors(form, e)
        else:
            messages.success(request, f"Team “{team.name}” created; you are its admin.")
            return redirect("studies:team", team.pk)
    teams = teams_of(request.user)
    members = Membership.objects.filter(team=OuterRef("pk")).order_by()
    shown = teams.annotate(
        n_members=Subquery(members.values("team").annotate(n=Count("id")).values("n")),
        my_role=Subquery(members.filter(user_id=request.user.pk).values("role")[:1]),
    ).order_by("name")[:TEAMS_SHOWN]
    return render(
        request,
        "studies/team_list.html",
        {"form": form, "teams": shown, "n_teams": teams.count()},
        status=400 if form.errors else 200,
    )


# A team's page


def team_page(
    request: HttpRequest,
    team: Team,
    *,
    status: int = 200,
    member_form: MemberForm | None = None,
    problem: str = "",
    role_errors: dict[str, list[str]] | None = None,
) -> HttpResponse:
    """The team's page; a refused change shows it again with ``problem`` or its input's errors."""
    user = request.user
    role = role_in(user, team.pk)
    can_manage = user.is_staff or role == ADMIN
    memberships = team.memberships.select_related("user").order_by("user__username")
    role_errors = role_errors or {}
    members = [
        (membership, role_errors.get(membership.user.get_username(), []))
        for membership in memberships[:MEMBERS_SHOWN]
    ]
    studies = Study.objects.readable_by(user).filter(team=team)
    activity = AuditEntry.objects.filter(team_id=team.pk)[: settings.HUB_ACTIVITY_ON_STUDY_PAGE]
    context = {
        "team": team,
        "role": role,
        "roles": ROLES,
        "can_manage": can_manage,
        "members": members,
        "n_members": memberships.count(),
        "studies": studies.select_related("owner").order_by("name")[:STUDIES_SHOWN],
        "n_studies": studies.count(),
        # Who did what in the team is for those who run it.
        "activity": list(activity) if can_manage else [],
        "member_form": member_form or MemberForm(initial={"role": VIEWER}),
        "problem": problem,
    }
    return render(request, "studies/team_detail.html", context, status=status)


@login_required
@require_GET
def team_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return team_page(request, team_or_404(request, pk))


# Changing the members


@login_required
@require_POST
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    team = team_or_404(request, pk)
    form = MemberForm(request.POST)
    form.is_valid()  # plain text fields: studies.teams checks the values
    username, role = form.cleaned_data["username"], form.cleaned_data["role"]
    try:
        do_add_member(team, request.user, username, role)
    except PermissionDenied as e:
        return team_page(request, team, status=403, problem=str(e))
    except ConfigError as e:
        add_errors(form, e)
        return team_page(request, team, status=400, member_form=form)
    messages.success(request, f"Added {username} to team “{team.name}” as {role}.")
    return redirect("studies:team", team.pk)


@login_required
@require_POST
def member_role(request: HttpRequest, pk: int, username: str) -> HttpResponse:
    team = team_or_404(request, pk)
    role = request.POST.get("role", "")
    try:
        do_change_role(team, request.user, username, role)
    except PermissionDenied as e:
        return team_page(request, team, status=403, problem=str(e))
    except Conflict as e:
        return team_page(request, team, status=409, problem=str(e))
    except ConfigError as e:
        errors = {username: [f"{one.field}: {one.message}" for one in e.errors]}
        return team_page(request, team, status=400, role_errors=errors)
    messages.success(request, f"{username} is now {role} of team “{team.name}”.")
    return redirect("studies:team", team.pk)


@login_required
@require_POST
def member_remove(request: HttpRequest, pk: int, username: str) -> HttpResponse:
    team = team_or_404(request, pk)
    try:
        do_remove_member(team, request.user, username)
    except PermissionDenied as e:
        return team_page(request, team, status=403, problem=str(e))
    except Conflict as e:
        return team_page(request, team, status=409, problem=str(e))
    except ConfigError as e:
        return team_page(request, team, status=400, problem=f"{e.field}: {e.message}")
    if username == request.user.get_username():
        messages.success(request, f"You left team “{team.name}”.")
        return redirect("studies:teams")
    messages.success(request, f"Removed {username} from team “{team.name}”.")
    return redirect("studies:team", team.pk)
