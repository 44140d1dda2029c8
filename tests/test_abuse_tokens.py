"""API tokens: hashed at rest, expiring, revocable at once, and only by their owner.

The revocation and expiry checks run against a real gunicorn with two worker
processes, so a token refused by one process is refused by the other too.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from studies.api.authentication import TokenAuthentication
from studies.models import ApiToken
from tests.conftest import token_for

drf_tokens_migration = importlib.import_module("studies.migrations.0003_api_tokens")


def api_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def every_stored_value() -> list[str]:
    """Every cell of every table, as text: what someone with a copy of the database reads."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            values.extend(str(cell) for row in cursor.fetchall() for cell in row)
    return values


# At rest


def test_the_database_holds_no_key_only_its_hash(db, alice):
    response = APIClient().post(
        "/api/auth/token/",
        {"username": "alice", "password": "alice-password", "name": "laptop"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    key = response.json()["token"]
    assert api_with(key).get("/api/studies/").status_code == 200
    assert not [value for value in every_stored_value() if key in value]
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert token.name == "laptop" and key.startswith(token.prefix) and len(token.prefix) < 16


def test_drf_tokens_of_an_older_hub_keep_working_and_leave_no_plain_key(db, alice):
    # The table and a row as DRF's authtoken app left them before this hub version.
    legacy = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY,"
            " created timestamp NOT NULL, user_id integer NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, %s)",
            [legacy, "2026-01-02 03:04:05", alice.pk],
        )
    # What the migration is handed; it only uses the editor's connection (SQLite's real
    # editor refuses to open inside the test's transaction).
    drf_tokens_migration.hash_drf_tokens(apps, SimpleNamespace(connection=connection))
    assert api_with(legacy).get("/api/studies/").status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.created_at.year == 2026 and token.prefix == legacy[:8]
    assert not [value for value in every_stored_value() if legacy in value]


# Expiry, revocation, last use


@pytest.mark.slow
def test_a_revoked_token_is_refused_at_once_by_every_worker(hub_server, alice):
    key = token_for(alice)
    auth = {"Authorization": f"Token {key}"}
    assert requests.get(f"{hub_server}/api/studies/", headers=auth, timeout=30).status_code == 200
    listed = requests.get(f"{hub_server}/api/tokens/", headers=auth, timeout=30).json()["results"]
    (mine,) = listed
    assert "key" not in mine and key.startswith(mine["prefix"])
    response = requests.delete(f"{hub_server}/api/tokens/{mine['id']}/", headers=auth, timeout=30)
    assert response.status_code == 204
    # New connections each time, so both worker processes answer some of them.
    for _ in range(10):
        response = requests.get(f"{hub_server}/api/studies/", headers=auth, timeout=30)
        assert response.status_code == 401
        assert response.json() == {"detail": "Token revoked."}


@pytest.mark.slow
def test_an_expired_token_is_refused_at_once_by_every_worker(hub_server, alice):
    key = token_for(alice)
    auth = {"Authorization": f"Token {key}"}
    assert requests.get(f"{hub_server}/api/studies/", headers=auth, timeout=30).status_code == 200
    ApiToken.objects.filter(user=alice).update(expires_at=timezone.now() - timedelta(seconds=1))
    for _ in range(10):
        response = requests.get(f"{hub_server}/api/studies/", headers=auth, timeout=30)
        assert response.status_code == 401
        assert response.json() == {"detail": "Token expired."}


def test_a_token_with_an_expiry_works_until_then(db, alice):
    response = api_with(token_for(alice)).post(
        "/api/tokens/", {"name": "ci", "expires_in_days": 30}, format="json"
    )
    assert response.status_code == 201, response.json()
    expires = ApiToken.objects.get(pk=response.json()["id"]).expires_at
    assert timedelta(days=29) < expires - timezone.now() <= timedelta(days=30)
    assert api_with(response.json()["key"]).get("/api/studies/").status_code == 200


def test_last_used_is_recorded_and_rewritten_at_most_once_a_minute(
    db, alice, django_assert_num_queries
):
    key = token_for(alice)
    token = ApiToken.objects.get(user=alice)
    assert token.last_used_at is None
    auth = TokenAuthentication()
    with django_assert_num_queries(2):  # the lookup, and the first use written
        assert auth.authenticate_credentials(key)[0] == alice
    token.refresh_from_db()
    first = token.last_used_at
    assert timezone.now() - first < timedelta(seconds=5)
    with django_assert_num_queries(1):  # used again within the minute: the lookup only
        auth.authenticate_credentials(key)
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    auth.authenticate_credentials(key)
    token.refresh_from_db()
    assert token.last_used_at > first


# Only one's own tokens


def test_another_users_token_can_be_neither_seen_nor_revoked(db, alice, bob, client):
    bobs_key = token_for(bob, "bob's laptop")
    bobs = ApiToken.objects.get(user=bob)
    alices = api_with(token_for(alice))
    assert [t["name"] for t in alices.get("/api/tokens/").json()["results"]] == ["tests"]
    assert alices.delete(f"/api/tokens/{bobs.pk}/").status_code == 404
    client.force_login(alice)
    assert client.post(f"/tokens/{bobs.pk}/revoke/").status_code == 404
    assert "bob's laptop" not in client.get("/tokens/").content.decode()
    assert api_with(bobs_key).get("/api/studies/").status_code == 200


def test_token_requests_with_bad_fields_are_400s_naming_them(db, alice, settings):
    api = api_with(token_for(alice))
    response = api.post("/api/tokens/", {"expires_in_days": 0}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"name", "expires_in_days"}
    response = api.post("/api/tokens/", {"name": "x" * 101}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    settings.HUB_MAX_API_TOKENS = 2
    assert api.post("/api/tokens/", {"name": "second"}, format="json").status_code == 201
    response = api.post("/api/tokens/", {"name": "third"}, format="json")
    assert response.status_code == 400 and "revoke one" in response.json()["tokens"][0]
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )
    assert response.status_code == 400 and "tokens" in response.json()


def test_create_token_prints_a_key_that_expires_as_asked(db, alice):
    out = io.StringIO()
    call_command("create_token", "alice", "--name", "cron", "--expires-days", "7", stdout=out)
    key = out.getvalue().strip()
    token = ApiToken.objects.get(user=alice)
    assert token.name == "cron" and token.expires_at is not None
    assert api_with(key).get("/api/studies/").status_code == 200


# The tokens page


def test_the_tokens_page_creates_shows_the_key_once_and_revokes(client, alice):
    assert client.get("/tokens/").status_code == 302  # signed out: to the login page
    client.force_login(alice)
    page = client.get("/")
    assert 'href="/tokens/"' in page.content.decode()  # in the navigation

    response = client.post("/tokens/", {"name": "travel-notebook", "expires_in_days": "90"})
    assert response.status_code == 200
    html = response.content.decode()
    key = re.search(r"export OPTUNA_HUB_TOKEN=([\w-]+)", html).group(1)
    assert "export OPTUNA_HUB_URL=http://testserver\n" in html
    assert "no-store" in response["Cache-Control"]
    assert api_with(key).get("/api/studies/").status_code == 200

    listing = client.get("/tokens/").content.decode()
    token = ApiToken.objects.get(user=alice)
    assert "travel-notebook" in listing and token.prefix in listing and key not in listing
    assert "ago" in listing  # last used: just now, by the request above

    response = client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    after = client.get("/tokens/").content.decode()
    assert "Revoked “travel-notebook”" in after and "You have no API tokens yet." in after
    assert api_with(key).get("/api/studies/").json() == {"detail": "Token revoked."}


def test_the_tokens_page_names_the_field_that_is_wrong(client, alice):
    client.force_login(alice)
    response = client.post("/tokens/", {"name": "", "expires_in_days": "0"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required." in html
    assert "Ensure this value is greater than or equal to 1." in html
    assert not ApiToken.objects.exists()


def test_operators_see_and_revoke_tokens_in_the_admin_but_never_a_key(admin_client, alice):
    client = admin_client
    token, key = ApiToken.issue(alice, "laptop")
    listing = client.get("/admin/studies/apitoken/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "laptop" in page and token.prefix in page
    assert key not in page and token.key_hash not in page
    detail = client.get(f"/admin/studies/apitoken/{token.pk}/change/").content.decode()
    assert key not in detail and token.key_hash not in detail
    assert client.get("/admin/studies/apitoken/add/").status_code == 403
    client.post(
        "/admin/studies/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api_with(key).get("/api/studies/").status_code == 401
