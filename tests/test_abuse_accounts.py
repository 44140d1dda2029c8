"""Accounts and sessions under attack: password guessing, weak passwords, deployment settings.

Login throttling is tried as an attacker would: many wrong passwords against a
real gunicorn with two worker processes, from one address and (binding the
client to 127.0.0.2) from another, with forged X-Forwarded-For headers.
API tokens are in test_abuse_tokens.py; the CSP and chart names in test_abuse_pages.py.
"""

from __future__ import annotations

import io
import re
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter

from studies.management.commands.start import Command as StartCommand
from tests.conftest import BASE_DIR, subprocess_env, token_for

LIMIT = settings.AXES_FAILURE_LIMIT
COOLOFF = int(settings.AXES_COOLOFF_TIME.total_seconds())
OTHER_ADDRESS = "127.0.0.2"  # loopback too, but another client address to the server


class FromAddress(HTTPAdapter):
    """Connect from a chosen local address, as a second machine would."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address: str | None = None) -> requests.Session:
    # A new session per request: a new connection, so either worker may answer.
    session = requests.Session()
    if address:
        session.mount("http://", FromAddress(address))
    return session


def token_login(
    base: str, username: str, password: str, address: str | None = None, **headers: str
) -> requests.Response:
    with client(address) as session:
        return session.post(
            f"{base}/api/auth/token/",
            json={"username": username, "password": password},
            headers=headers,
            timeout=60,
        )


def page_login(
    base: str, username: str, password: str, address: str | None = None
) -> requests.Response:
    with client(address) as session:
        form = session.get(f"{base}/accounts/login/", timeout=30)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        return session.post(
            f"{base}/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{base}/accounts/login/"},
            allow_redirects=False,
            timeout=60,
        )


def assert_locked(response: requests.Response) -> int:
    assert response.status_code == 429, (response.status_code, response.text[:300])
    seconds = int(response.headers["Retry-After"])
    assert 0 < seconds <= COOLOFF
    return seconds


# Failed logins


@pytest.mark.slow
def test_forty_wrong_passwords_at_once_are_all_answered_and_the_lock_holds_across_workers(
    hub_server, alice, bob
):
    # Eight at a time over two worker processes, as a guessing script would.
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: token_login(hub_server, "alice", f"guess-{i}"), range(40))
        )
    codes = [r.status_code for r in answers]
    assert set(codes) <= {400, 429}, codes
    # Only attempts made before the limit was reached get as far as checking a password.
    assert 1 <= codes.count(400) <= LIMIT - 1, codes
    for response in answers:
        if response.status_code == 429:
            seconds = assert_locked(response)
            assert response.json()["retry_after"] == seconds
            assert "Too many failed logins" in response.json()["detail"]

    # Locked: the right password too, and any user from this address ...
    assert_locked(token_login(hub_server, "alice", "alice-password"))
    assert_locked(token_login(hub_server, "bob", "bob-password"))
    # ... and alice from anywhere, since her username is locked as well.
    assert_locked(token_login(hub_server, "alice", "alice-password", OTHER_ADDRESS))
    # Another user from another address is not affected.
    response = token_login(hub_server, "bob", "bob-password", OTHER_ADDRESS)
    assert response.status_code == 200, response.text
    assert response.json()["token"]


@pytest.mark.slow
def test_the_login_page_locks_after_the_limit_and_says_for_how_long(hub_server, alice, bob):
    for _ in range(LIMIT - 1):
        response = page_login(hub_server, "alice", "wrong-password")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.text
    response = page_login(hub_server, "alice", "wrong-password")
    seconds = assert_locked(response)
    assert "Too many failed logins" in response.text
    assert f"{-(-seconds // 60)} minute" in response.text

    # The lock holds for the right password, on the page and on the API alike.
    response = page_login(hub_server, "alice", "alice-password")
    assert_locked(response)
    assert "sessionid" not in response.cookies
    assert_locked(token_login(hub_server, "alice", "alice-password"))
    # Bob, signing in from elsewhere, gets in.
    response = page_login(hub_server, "bob", "bob-password", OTHER_ADDRESS)
    assert response.status_code == 302 and "sessionid" in response.cookies


@pytest.mark.slow
def test_forged_forwarded_for_headers_and_new_usernames_do_not_escape_the_address_limit(
    hub_server, alice
):
    # Password spraying: one guess per username, each claiming another client address.
    codes = [
        token_login(
            hub_server, f"user{i}", "Winter2026!", **{"X-Forwarded-For": f"10.0.0.{i}"}
        ).status_code
        for i in range(LIMIT + 5)
    ]
    assert codes == [400] * (LIMIT - 1) + [429] * 6, codes
    assert_locked(token_login(hub_server, "alice", "alice-password"))


def test_a_failed_login_on_the_token_endpoint_is_a_400_naming_no_user(client, alice):
    body = {"username": "alice", "password": "nope"}
    response = client.post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}


# Password validators


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password", "too common"),
        ("12345678", "entirely numeric"),
        ("Xq7#", "too short"),
        ("alice123", "too similar to the username"),
    ],
)
def test_a_weak_new_password_is_refused_on_the_password_change_page(
    client, alice, password, reason
):
    client.force_login(alice)
    response = client.post(
        "/accounts/password_change/",
        {"old_password": "alice-password", "new_password1": password, "new_password2": password},
    )
    assert response.status_code == 200  # the form again, with the reason
    assert reason in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password("alice-password")


def test_a_strong_new_password_is_accepted_on_the_password_change_page(client, alice):
    client.force_login(alice)
    new = "tangerine-orbit-47-lattice"
    response = client.post(
        "/accounts/password_change/",
        {"old_password": "alice-password", "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_every_standard_validator_is_on(db):
    for weak in ["password", "12345678", "short"]:
        with pytest.raises(ValidationError):
            password_validation.validate_password(weak)
    user = get_user_model()(username="margaret", email="margaret@example.org")
    with pytest.raises(ValidationError, match="too similar"):
        password_validation.validate_password("margaret-example", user)


def test_the_first_admin_that_start_creates_has_a_password_the_validators_accept(db):
    out = io.StringIO()
    StartCommand(stdout=out).ensure_admin()
    password = re.search(r"admin / (\S+) ", out.getvalue()).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)
    password_validation.validate_password(password, admin)


# Deployment settings

PRODUCTION = {"DEBUG": "false", "HUB_HTTPS": "true", "ALLOWED_HOSTS": "hub.example.org"}


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy_is_clean_under_the_documented_production_settings(db):
    result = check_deploy(**PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    # Without HTTPS the same check names what is missing, so the test above can fail.
    result = check_deploy(**{**PRODUCTION, "HUB_HTTPS": "false"})
    assert result.returncode != 0
    for warning in ["W004", "W008", "W012", "W016"]:
        assert warning in result.stderr + result.stdout


def test_https_turns_on_secure_cookies_redirects_and_hsts_and_the_proxy_header_is_opt_in():
    script = (
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_AGE)"
    )
    run = [sys.executable, "-c", script]
    plain = subprocess.run(run, cwd=BASE_DIR, env=subprocess_env(), capture_output=True, text=True)
    assert plain.stdout.split() == ["False", "False", "False", "0", "None", "28800"], plain.stderr
    https = subprocess.run(
        run,
        cwd=BASE_DIR,
        env=subprocess_env(HUB_HTTPS="true", HUB_BEHIND_PROXY="true", HUB_SESSION_AGE="3600"),
        capture_output=True,
        text=True,
    )
    assert https.stdout.strip() == (
        "True True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https') 3600"
    ), https.stderr


# The secret key file


def test_the_secret_key_file_is_created_private_even_with_a_permissive_umask(tmp_path):
    env = subprocess_env(HUB_VAR_DIR=str(tmp_path))
    env.pop("SECRET_KEY", None)
    script = "import os; os.umask(0); from django.conf import settings; print(settings.SECRET_KEY)"
    # Several processes starting at once (gunicorn workers, a cluster) agree on one key.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in processes}
    path = tmp_path / "secret_key"
    assert keys == {path.read_text().strip()} and len(path.read_text()) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p.name for p in Path(tmp_path).iterdir() if p.name.startswith(".secret_key")]


# The API's schema and docs


def test_the_schema_and_the_docs_need_a_signed_in_user(client, alice):
    assert client.get("/api/schema/").status_code == 401
    response = client.get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/api/docs/"
    assert client.get("/api/docs/?script").status_code == 302

    token = token_for(alice)
    response = client.get("/api/schema/?format=json", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200 and "/api/tokens/" in response.json()["paths"]
    client.force_login(alice)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    # Its script is a file of its own, so the page needs no inline script.
    scripts = re.findall(r"<script([^>]*)>", page.content.decode())
    assert scripts and all("src=" in attributes for attributes in scripts)
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
