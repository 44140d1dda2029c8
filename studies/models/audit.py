"""The audit trail: who changed what, when, and through which face of the hub.

``AuditEntry.record`` is called by the code that made the change, after it
succeeded and in its transaction, so a refused or failed action leaves no entry.
Where the change came from (``via``: page, api, remote, admin, worker, command)
and the client's address are set per request by ``studies.middleware.audit_context``
and per task by the workers; the default is ``command`` (manage.py).

Entries keep the study's and team's ids, not foreign keys, so they outlive what
they describe: a deleted study's entries stay readable to its team's admins and
to staff.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from studies.models.fields import JSONTextField

PAGE, API, REMOTE, ADMIN, WORKER, COMMAND = "page", "api", "remote", "admin", "worker", "command"
VIAS = (PAGE, API, REMOTE, ADMIN, WORKER, COMMAND)
TARGET_MAX_LENGTH = 300

_context: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "hub_audit_context", default=(COMMAND, "")
)


@contextmanager
def audit_context(via: str, address: str = "") -> Any:
    """Entries recorded inside are marked as coming ``via`` this face, from ``address``."""
    token = _context.set((via, address))
    try:
        yield
    finally:
        _context.reset(token)


class AuditEntry(models.Model):
    STUDY_CREATED, STUDY_EDITED, STUDY_DELETED = "study.created", "study.edited", "study.deleted"
    JOB_STARTED, JOB_CANCELLED, JOB_RETRIED, JOB_FINISHED = (
        "job.started",
        "job.cancelled",
        "job.retried",
        "job.finished",
    )
    TEAM_CREATED = "team.created"
    MEMBER_ADDED, MEMBER_REMOVED, ROLE_CHANGED = "member.added", "member.removed", "member.role"
    TOKEN_CREATED, TOKEN_REVOKED = "token.created", "token.revoked"
    COMMAND_REGISTERED, COMMAND_CHANGED = "command.registered", "command.changed"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The username when it happened (a deleted user's entries still name them).
    actor_name = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=TARGET_MAX_LENGTH)
    study_id = models.BigIntegerField(null=True, blank=True)
    team_id = models.BigIntegerField(null=True, blank=True)
    via = models.CharField(max_length=10, choices=[(v, v) for v in VIAS])
    address = models.CharField(max_length=45, blank=True, default="")
    detail = JSONTextField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["study_id", "-at"], name="audit_by_study"),
            models.Index(fields=["team_id", "-at"], name="audit_by_team"),
            models.Index(fields=["actor", "-at"], name="audit_by_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.target}"

    @classmethod
    def record(
        cls,
        actor: Any,
        action: str,
        target: str,
        *,
        study: Any = None,
        team_id: int | None = None,
        via: str | None = None,
        **detail: Any,
    ) -> AuditEntry:
        """Record that ``actor`` (a user or None) did ``action`` to ``target``."""
        context_via, address = _context.get()
        actor_id = getattr(actor, "pk", None)
        name = actor.get_username() if actor_id else ""
        if actor_id and not name:  # the remote storage's user, loaded without its name
            name = type(actor).objects.filter(pk=actor_id).values_list("username", flat=True)
            name = next(iter(name), "")
        if study is not None and team_id is None:
            team_id = study.team_id
        return cls.objects.create(
            actor_id=actor_id,
            actor_name=name,
            action=action,
            target=target[:TARGET_MAX_LENGTH],
            study_id=getattr(study, "pk", None),
            team_id=team_id,
            via=via or context_via,
            address=address,
            detail=detail,
        )
