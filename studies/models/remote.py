"""What makes a remote storage call safe to retry: its first answer, by its key."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
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

    @classmethod
    def forget_old(cls) -> int:
        """Delete answers kept longer than HUB_STORAGE_IDEMPOTENCY_HOURS; how many."""
        since = timezone.now() - timedelta(hours=settings.HUB_STORAGE_IDEMPOTENCY_HOURS)
        deleted, _ = cls.objects.filter(created_at__lt=since).delete()
        return deleted
