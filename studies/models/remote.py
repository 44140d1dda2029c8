"""What makes a remote storage call safe to retry: its first answer, by its key."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from studies.models.fields import JSONTextField


class RemoteCall(models.Model):
    """The answer to a call a retry could apply twice (a new study or trial, a state change).

    HubStorage sends such calls with an ``Idempotency-Key``; a repeated key gets
    this answer instead of a second study or trial. Rows older than
    HUB_STORAGE_IDEMPOTENCY_HOURS are deleted by the workers' watchdog.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=64)
    method = models.CharField(max_length=64)
    result = JSONTextField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="remote_call_key")]

    def __str__(self) -> str:
        return f"{self.method} {self.key}"

    # Plain SQL: the ORM's cost would be most of a trial's on a fast connection.

    @classmethod
    def answer(cls, user_id: int, key: str) -> tuple[str, Any] | None:
        """The method and first answer of the call with this key, if there was one."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT method, result FROM {cls._meta.db_table}"
                ' WHERE user_id = %s AND "key" = %s',
                [user_id, key],
            )
            row = cursor.fetchone()
        return None if row is None else (row[0], None if row[1] is None else json.loads(row[1]))

    @classmethod
    def record(cls, user_id: int, key: str, method: str, result: Any) -> None:
        created_at = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO {cls._meta.db_table} (user_id, "key", method, result, created_at)'
                " VALUES (%s, %s, %s, %s, %s)",
                [user_id, key, method, None if result is None else json.dumps(result), created_at],
            )

    @classmethod
    def forget_old(cls) -> int:
        """Delete answers kept longer than HUB_STORAGE_IDEMPOTENCY_HOURS; how many."""
        since = timezone.now() - timedelta(hours=settings.HUB_STORAGE_IDEMPOTENCY_HOURS)
        deleted, _ = cls.objects.filter(created_at__lt=since).delete()
        return deleted
