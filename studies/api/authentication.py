"""``Authorization: Token <key>`` against the hub's hashed, expiring, revocable tokens.

It runs on every API request, so it is one indexed query (by the key's hash,
joined to the user) written out as raw SQL: building the same join with the
ORM costs more than answering it (benchmarks/token_auth.py). The query also
says whether the token is revoked, expired or due for a new ``last_used_at``,
which is written at most once a minute per token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions

from studies.models import ApiToken
from studies.models.token import hash_key

LAST_USED_PRECISION = timedelta(minutes=1)
FLAGS = ("hub_token_id", "hub_token_revoked", "hub_token_expired", "hub_token_stale")
LIMITS = ("hub_token_scope", "hub_token_team")


def token_query(user_columns: str = "u.*") -> str:
    users = get_user_model()._meta
    tokens = ApiToken._meta
    return (
        f"SELECT {user_columns}, t.id AS hub_token_id,"
        f" t.revoked_at IS NOT NULL AS hub_token_revoked,"
        f" (t.expires_at IS NOT NULL AND t.expires_at <= %s) AS hub_token_expired,"
        f" (t.last_used_at IS NULL OR t.last_used_at < %s) AS hub_token_stale,"
        f" t.scope AS hub_token_scope, t.team_id AS hub_token_team"
        f" FROM {users.db_table} u JOIN {tokens.db_table} t"
        f" ON t.user_id = u.{users.pk.column} WHERE t.key_hash = %s"
    )


def _params(key: str) -> tuple[Any, list[Any]]:
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    return now, [adapt(now), adapt(now - LAST_USED_PRECISION), hash_key(key)]


def _check(
    now: Any, is_active: bool, token_id: int, revoked: Any, expired: Any, stale: Any
) -> None:
    if revoked:
        raise exceptions.AuthenticationFailed("Token revoked.")
    if expired:
        raise exceptions.AuthenticationFailed("Token expired.")
    if not is_active:
        raise exceptions.AuthenticationFailed("User inactive or deleted.")
    if stale:
        ApiToken.objects.filter(pk=token_id).update(last_used_at=now)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's header and messages; the key is looked up by its SHA-256."""

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        now, params = _params(key)
        # RawQuerySet converts the user's columns as the ORM would (booleans, datetimes).
        found = list(get_user_model().objects.raw(token_query(), params))
        if not found:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = found[0]
        token_id, revoked, expired, stale = (vars(user).pop(flag) for flag in FLAGS)
        _check(now, user.is_active, token_id, revoked, expired, stale)
        # The token's limits stay on the user: studies/models/team.py reads them.
        scope, team_id = (getattr(user, name) for name in LIMITS)
        return user, ApiToken(pk=token_id, user=user, scope=scope, team_id=team_id)


def token_user_light(key: str) -> Any:
    """The key's user with only its id and is_staff loaded, for the remote storage's calls.

    Same checks as TokenAuthentication; it answers about ten calls per trial, and
    building the whole user row was half the cost of a call.
    """
    now, params = _params(key)
    with connection.cursor() as cursor:
        cursor.execute(token_query("u.id, u.is_staff, u.is_active"), params)
        row = cursor.fetchone()
    if row is None:
        raise exceptions.AuthenticationFailed("Invalid token.")
    user_id, is_staff, is_active, token_id, *flags, scope, team_id = row
    _check(now, bool(is_active), token_id, *flags)
    user = get_user_model()(pk=user_id, is_staff=bool(is_staff), is_active=True)
    user.hub_token_scope, user.hub_token_team = scope, team_id
    return user
