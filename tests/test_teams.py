"""Teams and visibility: a private study is a 404 to those outside it, on every face.

Also: a team's viewers read but do not write, editors write, read-scope and
team-limited tokens are held to their limits, removing a member ends their
access at once, and changes are audited once, refused ones never.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from studies.actions import do_create_study
from studies.config.study import clean_study_config
from studies.models import AuditEntry, Membership, Study, Team
from studies.teams import do_add_member, do_create_team, do_remove_member
from tests.conftest import client_for, token_for

pytestmark = pytest.mark.django_db


def remote(user, method: str, **args: object):
    return Client().post(
        f"/api/storage/v2/{method}/",
        data=json.dumps(args),
        content_type="application/json",
        headers={"Authorization": f"Token {token_for(user)}"},
    )


@pytest.fixture
def team(alice) -> Team:
    return do_create_team(alice, "vision")


@pytest.fixture
def private(alice, team) -> Study:
    config = clean_study_config({"name": "secret-sweep"})
    return do_create_study(alice, {**config, "team": team, "visibility": "private"})


def faces(study: Study) -> list[str]:
    pk = study.pk
    return [
        f"/api/studies/{pk}/",
        f"/api/studies/{pk}/trials/",
        f"/api/studies/{pk}/jobs/",
        f"/api/studies/{pk}/trials.csv",
        f"/api/studies/{pk}/trials.json",
    ]


def pages(study: Study) -> list[str]:
    pk = study.pk
    return [
        f"/studies/{pk}/",
        f"/studies/{pk}/status.json",
        f"/studies/{pk}/trials/",
        f"/studies/{pk}/charts/history.json",
        f"/studies/{pk}/edit/",
    ]


def test_a_private_study_is_not_found_outside_its_team(bob, private):
    api = client_for(bob)
    for url in faces(private):
        assert api.get(url).status_code == 404, url
    assert private.pk not in [s["id"] for s in api.get("/api/studies/").json()["results"]]
    assert api.get("/api/studies/?search=secret").json()["count"] == 0
    browser = Client()
    browser.force_login(bob)
    for url in pages(private):
        assert browser.get(url).status_code == 404, url
    assert "secret-sweep" not in browser.get("/?q=secret").content.decode()
    assert remote(bob, "get_study_id_from_name", study_name="secret-sweep").status_code == 404
    assert remote(bob, "get_trials", study_id=private.pk, after=0, ids=[]).status_code == 404
    names = [s["study_name"] for s in remote(bob, "get_all_studies").json()["result"]]
    assert "secret-sweep" not in names


def test_an_internal_study_is_read_by_everyone_and_changed_by_its_team(bob, alice, team):
    config = clean_study_config({"name": "open-sweep"})
    study = do_create_study(alice, {**config, "team": team, "visibility": "internal"})
    api = client_for(bob)
    assert api.get(f"/api/studies/{study.pk}/").status_code == 200
    assert api.patch(f"/api/studies/{study.pk}/", {"name": "x"}, format="json").status_code == 403
    assert api.post(f"/api/studies/{study.pk}/ask/", {}, format="json").status_code == 403


@pytest.mark.parametrize(("role", "reads", "writes"), [("viewer", 200, 403), ("editor", 200, 200)])
def test_roles(alice, bob, team, private, role, reads, writes):
    do_add_member(team, alice, "bob", role)
    api = client_for(bob)
    assert api.get(f"/api/studies/{private.pk}/").status_code == reads
    response = api.patch(f"/api/studies/{private.pk}/", {"name": "renamed"}, format="json")
    assert response.status_code == writes, response.content
    answer = remote(bob, "set_study_user_attr", study_id=private.pk, key="k", value=1)
    assert answer.status_code == (200 if writes == 200 else 403)


def test_removing_a_member_ends_their_access_at_once(alice, bob, team, private):
    do_add_member(team, alice, "bob", "editor")
    api = client_for(bob)
    assert api.get(f"/api/studies/{private.pk}/").status_code == 200
    do_remove_member(team, alice, "bob")
    assert api.get(f"/api/studies/{private.pk}/").status_code == 404
    assert not Membership.objects.filter(team=team, user=bob).exists()


def test_a_read_token_reads_and_may_not_write(alice, private):
    api = client_for(alice, scope="read")
    assert api.get(f"/api/studies/{private.pk}/").status_code == 200
    response = api.patch(f"/api/studies/{private.pk}/", {"name": "renamed"}, format="json")
    assert response.status_code == 403
    assert "read" in response.json()["detail"]
    assert api.post("/api/studies/", {"name": "new"}, format="json").status_code == 403
    private.refresh_from_db()
    assert private.name == "secret-sweep"


def test_a_team_token_sees_only_its_team(alice, team, private):
    config = clean_study_config({"name": "mine-alone"})
    own = do_create_study(alice, {**config, "visibility": "internal"})
    api = client_for(alice, team=team)
    assert api.get(f"/api/studies/{own.pk}/").status_code == 404
    assert api.get(f"/api/studies/{private.pk}/").status_code == 200
    made = api.post("/api/studies/", {"name": "made-by-team-token"}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["team"] == team.pk


def test_a_study_goes_only_into_a_team_one_edits_in(bob, team):
    api = client_for(bob)
    response = api.post("/api/studies/", {"name": "intruder", "team": team.pk}, format="json")
    assert response.status_code == 400
    assert "team" in response.json()
    assert not Study.objects.filter(name="intruder").exists()


def test_changes_are_audited_once_and_refusals_never(alice, bob, private):
    api = client_for(alice)
    assert api.patch(f"/api/studies/{private.pk}/", {"name": "n2"}, format="json").status_code
    assert client_for(bob).delete(f"/api/studies/{private.pk}/").status_code == 404
    assert api.delete(f"/api/studies/{private.pk}/").status_code == 204
    entries = AuditEntry.objects.filter(study_id=private.pk).order_by("at", "id")
    assert [(e.action, e.actor_name) for e in entries] == [
        (AuditEntry.STUDY_CREATED, "alice"),
        (AuditEntry.STUDY_EDITED, "alice"),
        (AuditEntry.STUDY_DELETED, "alice"),
    ]
    assert [e.via for e in entries][1:] == ["api", "api"]
    assert AuditEntry.objects.filter(action=AuditEntry.MEMBER_ADDED).count() == 0
    assert AuditEntry.objects.filter(action=AuditEntry.TEAM_CREATED, actor=alice).count() == 1


def test_tokens_are_made_with_a_scope_and_a_team(alice, bob, team):
    api = client_for(alice)
    made = api.post("/api/tokens/", {"name": "ci", "scope": "read", "team": team.pk}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["scope"], made.json()["team"]) == ("read", team.pk)
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Token {made.json()['key']}")
    assert reader.post("/api/studies/", {"name": "x"}, format="json").status_code == 403
    foreign = client_for(bob).post("/api/tokens/", {"name": "t", "team": team.pk}, format="json")
    assert foreign.status_code == 400
    assert "team" in foreign.json()
