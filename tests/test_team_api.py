"""The teams API, the audit API, token expiry and scope, per-team job limits, the admin.

Every refusal is tried by the user who would want it to pass (a viewer adding
members, an outsider probing a team's id), and checked to have written nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ
from rest_framework.test import APIClient

from studies.actions import do_create_study, do_delete_study, do_start_job
from studies.config.study import clean_study_config
from studies.jobs import tasks
from studies.models import ApiToken, AuditEntry, CommandObjective, Job, JobSlot, Membership, Team
from studies.teams import do_add_member, do_create_team
from tests.conftest import client_for
from tests.test_abuse_limits import lease_as_running, make_study
from tests.test_abuse_limits import shared as shared  # noqa: PLC0414 (the fixture)
from tests.test_jobs import fast as fast  # noqa: PLC0414

pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(django_user_model) -> User:
    return django_user_model.objects.create_user("carol", password="pw-carol-1")


@pytest.fixture
def team(alice, bob) -> Team:
    """alice admins it, bob views it."""
    team = do_create_team(alice, "vision")
    do_add_member(team, alice, "bob", "viewer")
    return team


def members(team: Team) -> dict[str, str]:
    return dict(team.memberships.values_list("user__username", "role"))


# Teams


def test_a_new_team_has_its_creator_as_admin_and_is_listed_for_members_only(alice, bob, carol):
    response = client_for(alice).post("/api/teams/", {"name": "  nlp "}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "nlp" and body["my_role"] == "admin" and body["n_members"] == 1
    assert body["members"] == [
        {"username": "alice", "role": "admin", "created_at": body["members"][0]["created_at"]}
    ]
    do_add_member(Team.objects.get(pk=body["id"]), alice, "bob", "editor")
    listed = client_for(bob).get("/api/teams/").json()["results"]
    assert [(t["name"], t["my_role"], t["n_members"]) for t in listed] == [("nlp", "editor", 2)]
    assert client_for(carol).get("/api/teams/").json()["results"] == []
    assert client_for(carol).get(f"/api/teams/{body['id']}/").status_code == 404


def test_staff_see_every_team_without_a_role_in_it(team, staff):
    body = client_for(staff).get(f"/api/teams/{team.pk}/").json()
    assert body["my_role"] is None and {m["username"] for m in body["members"]} == {"alice", "bob"}
    assert [t["name"] for t in client_for(staff).get("/api/teams/").json()["results"]] == ["vision"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "name"), ({"name": " "}, "name"), ({"name": "x" * 101}, "name"), ({"name": 7}, None)],
)
def test_a_bad_team_name_is_a_400_naming_it(alice, body, field):
    client = client_for(alice)
    response = client.post("/api/teams/", body, format="json")
    if field is None:  # a number is accepted as its text, as DRF does
        assert response.status_code == 201
        return
    assert response.status_code == 400 and field in response.json()
    assert not Team.objects.exists()
    assert not AuditEntry.objects.filter(action="team.created").exists()


def test_a_team_name_is_taken_once_and_a_user_admins_a_bounded_number(alice, bob, settings):
    do_create_team(alice, "vision")
    response = client_for(bob).post("/api/teams/", {"name": "vision"}, format="json")
    assert response.status_code == 400 and "already exists" in response.json()["name"][0]
    settings.HUB_MAX_TEAMS_PER_USER = 1
    response = client_for(alice).post("/api/teams/", {"name": "second"}, format="json")
    assert response.status_code == 400 and "1 teams" in response.json()["name"][0]
    assert list(Team.objects.values_list("name", flat=True)) == ["vision"]


def test_only_the_teams_admins_manage_its_members(team, alice, bob, carol):
    url = f"/api/teams/{team.pk}/members/"
    viewer, outsider, admin = client_for(bob), client_for(carol), client_for(alice)
    entries = AuditEntry.objects.count()
    for attempt in (
        viewer.post(url, {"username": "carol", "role": "admin"}, format="json"),
        viewer.patch(f"{url}bob/", {"role": "admin"}, format="json"),
        viewer.delete(f"{url}alice/"),
    ):
        assert attempt.status_code == 403, attempt.content
    for attempt in (  # an outsider does not learn the team exists
        outsider.post(url, {"username": "carol", "role": "admin"}, format="json"),
        outsider.delete(f"{url}bob/"),
    ):
        assert attempt.status_code == 404
    assert members(team) == {"alice": "admin", "bob": "viewer"}
    assert AuditEntry.objects.count() == entries

    response = admin.post(url, {"username": "carol", "role": "editor"}, format="json")
    assert response.status_code == 201 and response.json()["role"] == "editor"
    response = admin.patch(f"{url}bob/", {"role": "admin"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "admin"
    assert admin.delete(f"{url}carol/").status_code == 204
    assert members(team) == {"alice": "admin", "bob": "admin"}
    actions = AuditEntry.objects.filter(team_id=team.pk).values_list("action", "actor_name")
    assert list(actions)[:3] == [
        ("member.removed", "alice"),
        ("member.role", "alice"),
        ("member.added", "alice"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "nobody", "role": "viewer"}, "username"),
        ({"username": "bob", "role": "viewer"}, "username"),  # already a member
        ({"username": "carol", "role": "owner"}, "role"),
        ({"username": "carol"}, "role"),
        ({"role": "viewer"}, "username"),
    ],
)
def test_a_bad_member_is_a_400_naming_the_field(team, alice, carol, body, field):
    response = client_for(alice).post(f"/api/teams/{team.pk}/members/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert members(team) == {"alice": "admin", "bob": "viewer"}


def test_a_team_keeps_an_admin_the_last_one_cannot_leave_or_step_down(team, alice, bob):
    url = f"/api/teams/{team.pk}/members/alice/"
    response = client_for(alice).patch(url, {"role": "editor"}, format="json")
    assert response.status_code == 409 and "at least one admin" in response.json()["detail"]
    assert client_for(alice).delete(url).status_code == 409
    assert members(team) == {"alice": "admin", "bob": "viewer"}
    # A non-admin may leave; an unknown member is a 404.
    assert client_for(bob).delete(f"/api/teams/{team.pk}/members/bob/").status_code == 204
    url = f"/api/teams/{team.pk}/members/bob/"
    assert client_for(alice).patch(url, {"role": "admin"}, format="json").status_code == 404


def test_a_read_token_cannot_create_teams_or_change_members(team, alice):
    reader = client_for(alice, scope="read")
    assert reader.get(f"/api/teams/{team.pk}/").status_code == 200
    assert reader.post("/api/teams/", {"name": "more"}, format="json").status_code == 403
    body = {"username": "x", "role": "viewer"}
    response = reader.post(f"/api/teams/{team.pk}/members/", body, format="json")
    assert response.status_code == 403
    assert Team.objects.count() == 1


def test_removing_a_member_ends_their_access_to_the_teams_private_studies(team, alice, bob):
    config = clean_study_config({"name": "secret"})
    study = do_create_study(alice, {**config, "team": team, "visibility": "private"})
    reader = client_for(bob)
    assert reader.get(f"/api/studies/{study.pk}/").status_code == 200
    assert client_for(alice).delete(f"/api/teams/{team.pk}/members/bob/").status_code == 204
    assert reader.get(f"/api/studies/{study.pk}/").status_code == 404
    assert reader.get(f"/api/teams/{team.pk}/").status_code == 404


# The audit API


def test_a_studys_activity_is_read_by_its_readers_and_hidden_with_it(team, alice, bob, carol):
    config = clean_study_config({"name": "secret"})
    study = do_create_study(alice, {**config, "team": team, "visibility": "private"})
    body = {"user_attrs": {"note": "v2"}}
    response = client_for(alice).patch(f"/api/studies/{study.pk}/", body, format="json")
    assert response.status_code == 200, response.content
    body = client_for(bob).get(f"/api/audit/?study={study.pk}").json()
    assert [(e["actor"], e["action"], e["via"]) for e in body["results"]] == [
        ("alice", "study.edited", "api"),
        ("alice", "study.created", "command"),
    ]
    assert body["results"][0]["detail"] == {"fields": ["user_attrs"]}
    assert body["results"][0]["address"] is None  # for staff only
    assert client_for(carol).get(f"/api/audit/?study={study.pk}").status_code == 404
    assert client_for(carol).get("/api/audit/?study=999999").status_code == 404
    response = client_for(carol).get("/api/audit/?study=abc")
    assert response.status_code == 400 and "study" in response.json()


def test_a_teams_activity_is_for_its_admins_and_outlives_a_deleted_study(team, alice, bob, carol):
    study = do_create_study(alice, {**clean_study_config({"name": "gone"}), "team": team})
    do_delete_study(study, alice)
    admin = client_for(alice)
    actions = [e["action"] for e in admin.get(f"/api/audit/?team={team.pk}").json()["results"]]
    assert actions[:2] == ["study.deleted", "study.created"]
    assert "member.added" in actions and "team.created" in actions
    deleted = admin.get(f"/api/audit/?study={study.pk}").json()["results"]
    assert [e["action"] for e in deleted] == ["study.deleted", "study.created"]
    assert client_for(bob).get(f"/api/audit/?team={team.pk}").status_code == 403
    assert client_for(carol).get(f"/api/audit/?team={team.pk}").status_code == 404
    assert client_for(carol).get(f"/api/audit/?study={study.pk}").status_code == 404


def test_without_a_filter_one_reads_ones_own_actions_and_staff_read_all(team, alice, bob, staff):
    client_for(bob).post("/api/tokens/", {"name": "ci"}, format="json")
    mine = client_for(bob).get("/api/audit/").json()["results"]
    assert {e["actor"] for e in mine} == {"bob"}  # alice's entries in the team: not an admin
    assert [e["action"] for e in mine] == ["token.created"] * len(mine)
    operator = client_for(staff)
    everything = operator.get("/api/audit/").json()
    assert everything["count"] == AuditEntry.objects.count()
    by_api = [e for e in everything["results"] if e["via"] == "api"]
    assert by_api and {e["address"] for e in by_api} == {"127.0.0.1"}


# Tokens


def test_a_token_expires_at_the_time_given(alice):
    at = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    body = {"name": "ci", "expires_at": at.isoformat(), "scope": "read"}
    response = client_for(alice).post("/api/tokens/", body, format="json")
    assert response.status_code == 201, response.content
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert token.expires_at == at and token.scope == "read"
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = APIClient()
    expired.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['key']}")
    assert expired.get("/api/studies/").status_code == 401


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "must be in the future"),
        ({"expires_at": "tomorrow"}, "Datetime has wrong format"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "must be within"),
        ({"expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 2}, "not both"),
    ],
)
def test_a_bad_expiry_is_a_400_naming_expires_at(alice, expires, message):
    if "expires_in_days" in expires:
        expires["expires_at"] = (timezone.now() + timedelta(days=1)).isoformat()
    response = client_for(alice).post("/api/tokens/", {"name": "x", **expires}, format="json")
    assert response.status_code == 400 and message in response.json()["expires_at"][0]
    assert ApiToken.objects.filter(name="x").count() == 0


# Per-team job limits


def test_a_teams_active_jobs_are_limited_whoever_starts_them(team, alice, bob, settings):
    settings.HUB_MAX_ACTIVE_JOBS_PER_TEAM = 1
    Membership.objects.filter(team=team, user=bob).update(role="editor")
    do_start_job(make_study(alice, team=team), alice, n_trials=3)
    editor = client_for(bob)
    url = f"/api/studies/{make_study(bob, team=team).pk}/jobs/"
    response = editor.post(url, {"n_trials": 3}, format="json")
    assert response.status_code == 429, response.content
    assert "team 'vision' has 1 queued or running" in response.json()["detail"]
    assert "HUB_MAX_ACTIVE_JOBS_PER_TEAM is 1" in response.json()["detail"]
    assert Job.objects.count() == 1
    # Bob's own study is not the team's: his limit is his own.
    url = f"/api/studies/{make_study(bob).pk}/jobs/"
    assert editor.post(url, {"n_trials": 3}, format="json").status_code == 202


def test_a_slot_beyond_the_teams_running_limit_is_parked(
    transactional_db, team, alice, bob, shared
):
    shared.HUB_MAX_RUNNING_SLOTS_PER_TEAM = 1
    Membership.objects.filter(team=team, user=bob).update(role="editor")
    running = do_start_job(make_study(alice, team=team), alice, n_trials=5)
    waiting = do_start_job(make_study(bob, team=team), bob, n_trials=2)
    lease_as_running(running)
    OrmQ.objects.all().delete()
    assert "parked (limit)" in tasks.run_job_slot(waiting.pk, 0)
    body = client_for(bob).get(f"/api/jobs/{waiting.pk}/").json()
    assert body["waiting_reason"] == "waiting: team vision has 1 running slot (limit 1)"
    assert tasks.wake_parked() == []  # the team is still full

    JobSlot.objects.filter(job=running).update(token="", heartbeat=None, finished=True)
    running.cancel()
    assert tasks.wake_parked() == [f"job {waiting.pk}: woke slot 0 (limit)"]
    tasks.run_job_slot(waiting.pk, 0)
    waiting.refresh_from_db()
    assert waiting.status == "succeeded" and waiting.progress()["complete"] == 2


# The admin


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_audits_member_changes_and_keeps_an_admin(team, admin_user, carol):
    url = f"/admin/studies/team/{team.pk}/change/"
    rows = list(team.memberships.order_by("pk"))
    form = {
        "name": "vision",
        "memberships-TOTAL_FORMS": "3",
        "memberships-INITIAL_FORMS": "2",
        "memberships-0-id": rows[0].pk,
        "memberships-0-team": team.pk,
        "memberships-0-user": rows[0].user_id,
        "memberships-0-role": "viewer",  # alice, the only admin
        "memberships-1-id": rows[1].pk,
        "memberships-1-team": team.pk,
        "memberships-1-user": rows[1].user_id,
        "memberships-1-role": "viewer",
        "memberships-2-team": team.pk,
        "memberships-2-user": carol.pk,
        "memberships-2-role": "editor",
    }
    response = admin_client(admin_user).post(url, form)
    assert response.status_code == 200 and b"A team needs at least one admin" in response.content
    assert members(team) == {"alice": "admin", "bob": "viewer"}
    form["memberships-1-role"] = "admin"
    response = admin_client(admin_user).post(url, form)
    assert response.status_code == 302, response.content[:3000]
    assert members(team) == {"alice": "viewer", "bob": "admin", "carol": "editor"}
    entries = AuditEntry.objects.filter(team_id=team.pk, via="admin", actor_name="admin")
    changes = sorted(entries.values_list("action", "detail"), key=lambda e: e[1]["member"])
    assert changes == [
        ("member.role", {"member": "alice", "role": "viewer", "before": "admin"}),
        ("member.role", {"member": "bob", "role": "admin", "before": "viewer"}),
        ("member.added", {"member": "carol", "role": "editor"}),
    ]


def test_the_audit_log_is_read_only_in_the_admin(team, admin_user):
    entry = AuditEntry.objects.first()
    client = admin_client(admin_user)
    assert client.get("/admin/studies/auditentry/").status_code == 200
    assert client.get(f"/admin/studies/auditentry/{entry.pk}/change/").status_code == 200
    assert client.post(f"/admin/studies/auditentry/{entry.pk}/change/", {}).status_code == 403
    assert client.post(f"/admin/studies/auditentry/{entry.pk}/delete/", {}).status_code == 403
    assert client.get("/admin/studies/auditentry/add/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_admin_edits_of_studies_and_command_objectives_are_audited(alice, admin_user):
    study = make_study(alice)
    client = admin_client(admin_user)
    page = client.get(f"/admin/studies/study/{study.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    # What the page sends beside a field with a callable default (visibility).
    data["initial-visibility"] = data["visibility"]
    data.update(objective="rosenbrock", owner=alice.pk)
    response = client.post(f"/admin/studies/study/{study.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    study.refresh_from_db()
    assert study.sampler == {"type": "random", "options": {}, "seed": 0}  # not edited here
    edited = AuditEntry.objects.get(action="study.edited", study_id=study.pk)
    assert (edited.actor_name, edited.via, edited.detail) == (
        "admin",
        "admin",
        {"fields": ["objective"]},
    )

    command = {
        "name": "echo",
        "argv": '["/bin/echo", "1"]',
        "directions": '["minimize"]',
        "search_space": '{"x": {"type": "float", "low": 0, "high": 1}}',
        "environment": "{}",
        "pass_environment": "[]",
        "timeout": "60",
        "enabled": "on",
    }
    response = client.post("/admin/studies/commandobjective/add/", command)
    assert response.status_code == 302, response.content[:2000]
    row = CommandObjective.objects.get(name="echo")
    response = client.post(
        f"/admin/studies/commandobjective/{row.pk}/change/", {**command, "timeout": "30"}
    )
    assert response.status_code == 302
    entries = AuditEntry.objects.filter(action__startswith="command.").order_by("pk")
    assert [(e.action, e.detail["fields"], e.via) for e in entries] == [
        ("command.registered", [], "admin"),
        ("command.changed", ["timeout"], "admin"),
    ]


def test_the_schema_documents_teams_and_audit(alice):
    schema = client_for(alice).get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/teams/"])
    assert {"post"} <= set(paths["/api/teams/{id}/members/"])
    assert {"patch", "delete"} <= set(paths["/api/teams/{id}/members/{username}/"])
    parameters = {p["name"] for p in paths["/api/audit/"]["get"]["parameters"]}
    assert parameters == {"page", "page_size", "study", "team"}
    token_body = schema["components"]["schemas"]["CreateToken"]["properties"]
    assert {"scope", "team", "expires_at"} <= set(token_body)


def test_a_jobs_life_is_audited_once_per_change_with_its_actor_and_face(
    transactional_db, team, alice, bob, admin_user, fast
):
    study = make_study(alice, team=team)
    viewer, page = client_for(bob), admin_client(alice)
    url = f"/api/studies/{study.pk}/jobs/"
    response = client_for(alice).post(url, {"n_trials": 2}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    # Refused: a viewer cancels, through the API and the page.
    assert viewer.post(f"/api/jobs/{job.pk}/cancel/").status_code == 403
    bobs_page = admin_client(bob)
    assert bobs_page.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert page.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    admin_client(admin_user).post(
        "/admin/studies/job/", {"action": "retry_jobs", "_selected_action": [job.pk]}
    )
    OrmQ.objects.all().delete()
    tasks.run_job_slot(job.pk, 0)
    job.refresh_from_db()
    assert job.status == "succeeded"
    entries = AuditEntry.objects.filter(study_id=study.pk).order_by("at", "id")
    assert [(e.action, e.actor_name, e.via) for e in entries] == [
        ("job.started", "alice", "api"),
        ("job.cancelled", "alice", "page"),
        ("job.retried", "admin", "admin"),
        ("job.finished", "", "worker"),
    ]
    assert entries.last().detail == {"job": job.pk, "status": "succeeded", "reason": "n_trials"}
