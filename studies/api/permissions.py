from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from studies.models import Trial


class IsOwnerOrStaffToWrite(BasePermission):
    """Any signed-in user reads; only the study's owner or staff change it or its trials."""

    message = "Only the study's owner or staff may do this."

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        study = obj.study if isinstance(obj, Trial) else obj
        return study.can_edit(request.user)
