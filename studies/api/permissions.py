from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from studies.models.team import READ, token_limits


class TokenScope(BasePermission):
    """A read token reads: anything else it sends is a 403, whatever it names."""

    message = "This API token's scope is read: it may only read."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in SAFE_METHODS or token_limits(request.user)[0] != READ


class CanEditToWrite(BasePermission):
    """Readers read (the queryset holds only what they may); writers change.

    A study's writers are its owner (a personal study), its team's editors and
    admins, and staff: ``Study.can_edit``. A trial or a job is its study's.
    """

    message = "Only the study's owner, its team's editors or staff may do this."

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return getattr(obj, "study", obj).can_edit(request.user)
