"""DRF's token authentication, with its one query written out.

It runs on every API request, and building ``Token.objects.select_related("user")
.get(key=key)`` costs more than answering it: the same join as a raw query, with
the same checks and messages, takes a third of the time (benchmarks/token_auth.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, exactly as DRF's, answered by one raw query."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        users = get_user_model()._meta
        sql = (
            f"SELECT u.* FROM {users.db_table} u JOIN {Token._meta.db_table} t"
            f" ON t.user_id = u.{users.pk.column} WHERE t.key = %s"
        )
        # RawQuerySet converts the columns as the ORM would (booleans, datetimes).
        found = list(get_user_model().objects.raw(sql, [key]))
        if not found:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = found[0]
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, Token(key=key, user=user)
