"""API tokens: named, expiring, revocable, and stored only as a hash.

A key is 32 random bytes, so a plain SHA-256 of it cannot be reversed or
guessed and needs no salt or slow hash; the database holds the hash and a short
prefix to recognise the key by, never the key. A key is shown once, when made.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from studies.models.audit import AuditEntry
from studies.models.team import SCOPES, WRITE

KEY_PREFIX = "ohub_"
# Shown in lists so a user can tell tokens apart: the marker and 7 random characters.
PREFIX_LENGTH = len(KEY_PREFIX) + 7
MAX_NAME_LENGTH = 100
MAX_EXPIRY_DAYS = 3650


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_limit_error(user: Any) -> str | None:
    """Why ``user`` may not have another token, or None.

    Each login through the API makes a token, so a script logging in on every
    run would otherwise pile them up without end.
    """
    limit = settings.HUB_MAX_API_TOKENS
    if ApiToken.objects.filter(user=user).active().count() < limit:
        return None
    return (
        f"You have {limit} active tokens, the most allowed; revoke one at /tokens/ "
        f"(or DELETE /api/tokens/{{id}}/), or reuse a token you have."
    )


class ApiTokenQuerySet(models.QuerySet):
    def unrevoked(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at=None)

    def active(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.unrevoked().filter(models.Q(expires_at=None) | models.Q(expires_at__gt=now))


class ApiToken(models.Model):
    """One key for ``Authorization: Token <key>``, owned by one user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=MAX_NAME_LENGTH)
    # unique, hence indexed: authentication is one lookup by it.
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    # Updated at most once a minute, so authenticating rarely writes.
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # "read": GET and the remote storage's reads only. "write": what its user may do.
    scope = models.CharField(max_length=5, choices=[(s, s) for s in SCOPES], default=WRITE)
    # Set: the token sees and changes only this team's studies.
    team = models.ForeignKey(
        "Team", null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls,
        user: Any,
        name: str,
        expires_in_days: int | None = None,
        *,
        expires_at: Any = None,
        scope: str = WRITE,
        team: Any = None,
    ) -> tuple[ApiToken, str]:
        """A new token for ``user`` and its key, which nothing can show again."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        if expires_in_days is not None:
            expires_at = timezone.now() + timedelta(days=expires_in_days)
        token = cls.objects.create(
            user=user,
            name=name,
            key_hash=hash_key(key),
            prefix=key[:PREFIX_LENGTH],
            expires_at=expires_at,
            scope=scope,
            team=team,
        )
        AuditEntry.record(
            user, AuditEntry.TOKEN_CREATED, f"token {token}", team_id=token.team_id, scope=scope
        )
        return token, key

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self, by: Any = None) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
            AuditEntry.record(by or self.user, AuditEntry.TOKEN_REVOKED, f"token {self}")
