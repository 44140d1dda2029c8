"""The teams pages: one's teams, a team's page and its member forms, and where teams show elsewhere.

Tried as a hostile user would: a team one is not in is a 404 on every URL, a
viewer or editor changes nothing, the last admin cannot go, bad input is a 400
naming its field; and each page's queries stay bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from studies.actions import do_create_study
from studies.config.study import clean_study_config
from studies.models import ApiToken, AuditEntry, Membership, Study, Team
from studies.teams import do_add_member, do_create_team

pytestmark = pytest.mark.django_db


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_study(
    user: Any, name: str, team: Team | None = None, visibility: str = "private"
) -> Study:
    config = clean_study_config({"name": name})
    return do_create_study(user, {**config, "team": team, "visibility": visibility})


def written() -> tuple[int, int, int]:
    """What a refused change must leave as it was."""
    return Team.objects.count(), Membership.objects.count(), AuditEntry.objects.count()


@pytest.fixture
def team(alice) -> Team:
    return do_create_team(alice, "vision")


def team_posts(team: Team, username: str = "alice") -> list[tuple[str, dict[str, str]]]:
    pk = team.pk
    return [
        (f"/teams/{pk}/members/add/", {"username": "carol", "role": "viewer"}),
        (f"/teams/{pk}/members/{username}/role/", {"role": "viewer"}),
        (f"/teams/{pk}/members/{username}/remove/", {}),
    ]


# The teams list


def test_the_teams_page_lists_ones_teams_and_creates_one(alice, bob, team):
    do_create_team(bob, "bobs-team")
    page = browser(alice).get("/teams/")
    assert page.status_code == 200
    assert "vision" in page.text and "bobs-team" not in page.text
    assert 'href="/teams/"' in browser(alice).get("/tokens/").text  # in the navigation

    response = browser(alice).post("/teams/", {"name": "  speech  "}, follow=True)
    created = Team.objects.get(name="speech")
    assert response.redirect_chain == [(f"/teams/{created.pk}/", 302)]
    assert "Team “speech” created" in response.text
    assert Membership.objects.get(team=created).role == "admin"
    entry = AuditEntry.objects.filter(team_id=created.pk).get()
    assert (entry.actor_name, entry.action, entry.via) == ("alice", "team.created", "page")


def test_a_duplicate_or_empty_team_name_is_a_400_beside_the_name(alice, team):
    before = written()
    response = browser(alice).post("/teams/", {"name": "vision"})
    assert response.status_code == 400
    assert "a team named &#x27;vision&#x27; already exists" in response.text
    assert 'class="field has-error"' in response.text
    response = browser(alice).post("/teams/", {"name": "   "})
    assert response.status_code == 400 and "is required" in response.text
    assert written() == before


def test_staff_see_every_team_and_its_activity(staff, team):
    assert "vision" in browser(staff).get("/teams/").text
    page = browser(staff).get(f"/teams/{team.pk}/")
    assert page.status_code == 200
    assert 'id="add-member"' in page.text and "team.created" in page.text
    assert "Leave team" not in page.text  # staff, not a member


# A team one is not in


def test_a_team_one_is_not_in_is_not_found_on_every_url(bob, team):
    before = written()
    client = browser(bob)
    assert client.get(f"/teams/{team.pk}/").status_code == 404
    assert client.get("/teams/999999/").status_code == 404
    for url, data in [*team_posts(team), *team_posts(team, "bob")]:
        assert client.post(url, data).status_code == 404, url
    assert "vision" not in client.get("/teams/").text
    assert written() == before


def test_the_team_pages_need_a_signed_in_user(team):
    assert Client().get(f"/teams/{team.pk}/").status_code == 302
    for url, data in team_posts(team):
        assert Client().post(url, data).status_code == 302, url
    assert Membership.objects.count() == 1


# Members' rights


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_viewers_and_editors_cannot_change_the_members(alice, bob, team, role, django_user_model):
    django_user_model.objects.create_user("carol")
    do_add_member(team, alice, "bob", role)
    page = browser(bob).get(f"/teams/{team.pk}/")
    assert page.status_code == 200
    assert "alice" in page.text and 'id="add-member"' not in page.text
    assert "member.added" not in page.text  # the activity is for admins
    before = written()
    for url, data in team_posts(team):
        response = browser(bob).post(url, data)
        assert response.status_code == 403, url
        assert "Only the admins of team" in response.text
    assert written() == before
    assert Membership.objects.get(team=team, user=alice).role == "admin"


def test_the_admin_adds_changes_and_removes_a_member(alice, bob, team):
    client = browser(alice)
    response = client.post(
        f"/teams/{team.pk}/members/add/", {"username": "bob", "role": "viewer"}, follow=True
    )
    assert response.redirect_chain == [(f"/teams/{team.pk}/", 302)]
    assert "Added bob to team “vision” as viewer." in response.text
    assert Membership.objects.get(team=team, user=bob).role == "viewer"

    response = client.post(f"/teams/{team.pk}/members/bob/role/", {"role": "editor"}, follow=True)
    assert "bob is now editor" in response.text
    assert Membership.objects.get(team=team, user=bob).role == "editor"

    response = client.post(f"/teams/{team.pk}/members/bob/remove/", follow=True)
    assert "Removed bob from team “vision”." in response.text
    assert not Membership.objects.filter(team=team, user=bob).exists()
    actions = list(AuditEntry.objects.filter(team_id=team.pk).values_list("action", "via"))
    assert actions[:3] == [
        ("member.removed", "page"),
        ("member.role", "page"),
        ("member.added", "page"),
    ]
    page = client.get(f"/teams/{team.pk}/")
    assert "member.removed" in page.text and "bob in team vision" in page.text
    assert browser(bob).get(f"/teams/{team.pk}/").status_code == 404


def test_the_last_admin_cannot_leave_or_step_down(alice, bob, team):
    do_add_member(team, alice, "bob", "editor")
    before = written()
    client = browser(alice)
    for url, data in [
        (f"/teams/{team.pk}/members/alice/remove/", {}),
        (f"/teams/{team.pk}/members/alice/role/", {"role": "viewer"}),
    ]:
        response = client.post(url, data)
        assert response.status_code == 409, url
        assert "A team needs at least one admin" in response.text
    assert written() == before
    assert Membership.objects.get(team=team, user=alice).role == "admin"


def test_bad_usernames_and_roles_are_400s_naming_the_field(alice, bob, team):
    client = browser(alice)
    before = written()
    response = client.post(
        f"/teams/{team.pk}/members/add/", {"username": "nobody", "role": "viewer"}
    )
    assert response.status_code == 400
    assert "no active user is named &#x27;nobody&#x27;" in response.text
    assert 'value="nobody"' in response.text  # the form keeps what was typed
    response = client.post(f"/teams/{team.pk}/members/add/", {"username": "bob", "role": "owner"})
    assert response.status_code == 400
    assert "must be one of viewer, editor, admin" in response.text
    response = client.post(
        f"/teams/{team.pk}/members/add/", {"username": "alice", "role": "viewer"}
    )
    assert response.status_code == 400 and "is already a member" in response.text
    response = client.post(f"/teams/{team.pk}/members/alice/role/", {"role": "boss"})
    assert response.status_code == 400
    assert "role: must be one of viewer, editor, admin" in response.text
    response = client.post(f"/teams/{team.pk}/members/bob/remove/")
    assert response.status_code == 400
    assert "username: &#x27;bob&#x27; is not a member" in response.text
    assert written() == before


def test_any_member_may_leave_a_team(alice, bob, team):
    do_add_member(team, alice, "bob", "viewer")
    page = browser(bob).get(f"/teams/{team.pk}/")
    assert f'action="/teams/{team.pk}/members/bob/remove/"' in page.text
    response = browser(bob).post(f"/teams/{team.pk}/members/bob/remove/", follow=True)
    assert response.redirect_chain == [("/teams/", 302)]
    assert "You left team “vision”." in response.text
    assert not Membership.objects.filter(team=team, user=bob).exists()
    assert browser(bob).get(f"/teams/{team.pk}/").status_code == 404


def test_read_only_pages_refuse_other_methods_and_forms_refuse_gets(alice, team):
    client = browser(alice)
    study = make_study(alice, "demo")
    for url in (f"/teams/{team.pk}/", f"/studies/{study.pk}/", "/"):
        assert client.post(url).status_code == 405, url
    assert client.put("/teams/").status_code == 405
    assert client.delete(f"/teams/{team.pk}/").status_code == 405
    for url, _ in team_posts(team):
        assert client.get(url).status_code == 405, url
    assert Membership.objects.count() == 1


def test_the_team_page_lists_the_studies_one_may_read(alice, bob, team):
    do_add_member(team, alice, "bob", "viewer")
    make_study(alice, "team-sweep", team)
    make_study(alice, "alices-own")
    page = browser(bob).get(f"/teams/{team.pk}/")
    assert "team-sweep" in page.text and "alices-own" not in page.text
    assert f'href="/?team={team.pk}"' in page.text


def test_the_teams_pages_queries_do_not_grow_with_the_team(alice, team, django_user_model):
    def queries(url: str) -> int:
        client = browser(alice)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    make_study(alice, "one", team)
    small = (queries(f"/teams/{team.pk}/"), queries("/teams/"))
    for i in range(15):
        django_user_model.objects.create_user(f"user{i}")
        do_add_member(team, alice, f"user{i}", "viewer")
        make_study(alice, f"study-{i}", team)
        do_create_team(alice, f"team-{i}")
    assert (queries(f"/teams/{team.pk}/"), queries("/teams/")) == small


# Tokens, the studies list and the study page


def test_the_token_page_makes_a_read_token_for_a_team(alice, team):
    client = browser(alice)
    form = client.get("/tokens/").text
    assert 'name="scope"' in form and "Any of my studies" in form
    response = client.post("/tokens/", {"name": "ci", "scope": "read", "team": team.pk})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice, name="ci")
    assert (token.scope, token.team) == ("read", team)
    row = response.text.split('id="token-table"')[1]
    assert "ci" in row and ">read<" in row and "vision" in row


def test_the_token_page_defaults_to_write_and_any_study(alice):
    assert browser(alice).post("/tokens/", {"name": "laptop"}).status_code == 200
    token = ApiToken.objects.get(user=alice, name="laptop")
    assert (token.scope, token.team) == ("write", None)


def test_the_token_page_refuses_a_team_one_is_not_in(alice, bob):
    bobs = do_create_team(bob, "bobs-team")
    response = browser(alice).post("/tokens/", {"name": "ci", "scope": "write", "team": bobs.pk})
    assert response.status_code == 400
    assert "is not a team of yours" in response.text and "bobs-team" not in response.text
    response = browser(alice).post("/tokens/", {"name": "ci", "scope": "admin"})
    assert response.status_code == 400
    assert not ApiToken.objects.filter(user=alice).exists()


def test_the_studies_list_filters_by_team(alice, team):
    other = do_create_team(alice, "speech")
    make_study(alice, "vision-sweep", team)
    make_study(alice, "speech-sweep", other)
    make_study(alice, "personal-sweep")
    client = browser(alice)
    everything = client.get("/").text
    assert '<select name="team"' in everything
    assert all(n in everything for n in ("vision-sweep", "speech-sweep", "personal-sweep"))
    page = client.get(f"/?team={team.pk}&q=sweep&sort=name").text
    assert "vision-sweep" in page and "speech-sweep" not in page and "personal-sweep" not in page
    assert f'<option value="{team.pk}" selected>vision</option>' in page
    assert client.get(f"/?team={team.pk}&q=nothing").text.count("No study of team “vision”") == 1


def test_the_study_page_shows_its_activity_to_readers_only(alice, bob, team):
    study = make_study(alice, "secret-sweep", team)
    browser(alice).post(f"/studies/{study.pk}/run/", {"n_trials": "x"})  # refused: no entry
    page = browser(alice).get(f"/studies/{study.pk}/")
    activity = page.text.split('id="activity-table"')[1].split("</table>")[0]
    assert "study.created" in activity and "alice" in activity and "secret-sweep" in activity
    assert activity.count("<tr>") == 1 + 1  # the header and the one entry
    assert browser(bob).get(f"/studies/{study.pk}/").status_code == 404


def test_the_study_page_reads_its_activity_in_one_query(alice):
    study = make_study(alice, "busy")
    for i in range(30):
        AuditEntry.record(alice, AuditEntry.STUDY_EDITED, f"study busy {i}", study=study)
    with CaptureQueriesContext(connection) as captured:
        page = browser(alice).get(f"/studies/{study.pk}/")
    audit = [q for q in captured.captured_queries if "studies_auditentry" in q["sql"]]
    assert len(audit) == 1
    table = page.text.split('id="activity-table"')[1].split("</table>")[0]
    assert table.count("study.edited") == settings.HUB_ACTIVITY_ON_STUDY_PAGE
