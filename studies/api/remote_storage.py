"""The remote Optuna storage: each ``optuna_hub_client.HubStorage`` call, run on DjangoStorage.

``POST /api/storage/v2/<method>/`` (or v1) with a JSON object of arguments answers
``{"result": ...}``, or ``{"error": <name>, "detail": <message>}`` with the
exception's name, which the client raises again (KeyError 404,
DuplicatedStudyError and UpdateFinishedTrialError 409, ValueError and
InvalidRequest 400, PermissionError 403). The trial format is
``optuna_hub_client._wire``'s, so both ends share one definition; the calls
themselves, their checks and rights are in ``studies/api/remote_calls.py``.

Two optional arguments let a client make one request of what Optuna makes
several calls of:

- ``_pending``: ``[[method, args], ...]``, writes to trials that return nothing
  (``remote_calls.DEFERRABLE``), run in order before the call itself. A failed
  one stops there; the writes before it stand, and the error names it.
- ``_sync``: ``{"study_id", "after", "ids"}``: the answer also carries that
  study's trials as ``get_trials`` would give them after the call, under
  ``"trials"``, so a read that follows needs no request of its own.

The pending writes, the call and its ``Idempotency-Key`` record are one
transaction (one commit). A plain Django view rather than DRF: it runs several
times per trial, and DRF's request wrapping would be most of its cost.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from csp.decorators import csp_exempt
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

from studies.api.authentication import token_user_light
from studies.api.remote_calls import DEFERRABLE, METHODS, Call, read_trials, trials_wanted
from studies.config.errors import ConfigError
from studies.models import RemoteCall
from studies.storage import get_storage
from studies.storage.sqlite import write_transaction

# What a call may raise for its client to raise again.
CALL_ERRORS = (
    ConfigError,
    KeyError,
    DuplicatedStudyError,
    UpdateFinishedTrialError,
    PermissionError,
    PermissionDenied,
    ValueError,
)


class Refused(Exception):
    """A call the hub will not run: answered with ``status`` and the error's name."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class PendingFailed(Exception):
    """A write sent ahead of a call failed with ``error``; the call did not run."""

    def __init__(self, index: int, method: str, error: Exception) -> None:
        super().__init__(str(error))
        self.index, self.method, self.error = index, method, error


def json_response(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def error_response(status: int, error: str, detail: str, **extra: Any) -> HttpResponse:
    return json_response({"error": error, "detail": detail, **extra}, status)


def describe(e: Exception) -> tuple[int, str, str]:
    """A call's exception as the status, error name and detail its client raises again."""
    if isinstance(e, ConfigError):
        return 400, "InvalidRequest", f"{e.field}: {e.message}"
    if isinstance(e, KeyError):
        return 404, "KeyError", str(e.args[0]) if e.args else "Not found."
    if isinstance(e, DuplicatedStudyError | UpdateFinishedTrialError):
        return 409, type(e).__name__, str(e)
    if isinstance(e, PermissionError | PermissionDenied):
        return 403, "PermissionError", str(e)
    return 400, "ValueError", str(e)


@csrf_exempt  # a token, never a cookie: no other site can make the browser call it
@csp_exempt()  # JSON, never a page
def storage_call(request: HttpRequest, method: str) -> HttpResponse:
    handler = METHODS.get(method)
    if handler is None:
        return error_response(404, "NotFound", f"The hub has no storage method {method!r}.")
    if request.method != "POST":
        return error_response(405, "MethodNotAllowed", "Storage calls are POST requests.")
    try:
        user = authenticate(request)
        args = parse_args(request)
        storage = get_storage()
        call = Call(user, args, storage)
        pending = pending_calls(call, args.pop("_pending", []))
        sync = sync_wanted(call, args.pop("_sync", None))
        key = request.headers.get("Idempotency-Key")
        payload = {"result": execute(call, method, handler, key, pending)}
        if sync is not None:
            with contextlib.suppress(KeyError):  # no such study: the client reads as usual
                payload["trials"] = read_trials(storage, sync)
    except Refused as e:
        return error_response(e.status, e.error, e.detail)
    except PendingFailed as e:
        status, error, detail = describe(e.error)
        return error_response(status, error, f"{e.method} (sent ahead): {detail}", pending=e.index)
    except CALL_ERRORS as e:
        return error_response(*describe(e))
    return json_response(payload)


def authenticate(request: HttpRequest) -> Any:
    words = get_authorization_header(request).split()
    if len(words) != 2 or words[0].lower() != b"token":
        raise Refused(401, "NotAuthenticated", "Send an API token: Authorization: Token <key>.")
    try:
        return token_user_light(words[1].decode())
    except (exceptions.AuthenticationFailed, UnicodeDecodeError) as e:
        raise Refused(
            401, "NotAuthenticated", str(getattr(e, "detail", "Invalid token."))
        ) from None


def parse_args(request: HttpRequest) -> dict[str, Any]:
    try:
        body = request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raise Refused(413, "InvalidRequest", f"The body is larger than {limit} bytes.") from None
    try:
        args = json.loads(body or b"{}")
    except RecursionError:
        raise Refused(400, "InvalidRequest", "The body is nested too deeply.") from None
    except ValueError as e:
        raise Refused(400, "InvalidRequest", f"The body is not JSON: {e}") from None
    if not isinstance(args, dict):
        raise Refused(400, "InvalidRequest", "The body must be a JSON object of arguments.")
    return args


def pending_calls(call: Call, pending: Any) -> list[tuple[str, Call]]:
    """The writes sent ahead of the call, each as a call of its own."""
    limit = settings.HUB_STORAGE_MAX_PENDING
    if not isinstance(pending, list) or len(pending) > limit:
        raise ConfigError("_pending", f"must be a list of at most {limit} calls")
    calls = []
    for index, item in enumerate(pending):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in DEFERRABLE
            or not isinstance(item[1], dict)
        ):
            names = ", ".join(sorted(DEFERRABLE))
            raise ConfigError(f"_pending[{index}]", f"must be [method, args] with one of {names}")
        calls.append((item[0], Call(call.user, item[1], call.storage)))
    return calls


def sync_wanted(call: Call, sync: Any) -> tuple[int, int, list[int]] | None:
    """The study whose trials the answer should carry, checked before the call runs."""
    if sync is None:
        return None
    if not isinstance(sync, dict):
        raise ConfigError("_sync", "must be an object of study_id, after and ids")
    try:
        return trials_wanted(Call(call.user, sync, call.storage))
    except ConfigError as e:
        raise ConfigError(f"_sync.{e.field}", e.message) from None


def execute(
    call: Call,
    method: str,
    handler: Callable[[Call], Any],
    key: str | None,
    pending: list[tuple[str, Call]],
) -> Any:
    """Run the pending writes, then the call, once per key: a retry gets the first answer."""
    if key is None and not pending:
        return handler(call)
    if key is not None and len(key) > 64:
        raise ConfigError("Idempotency-Key", "must be at most 64 characters")
    failure: Exception | None = None
    with write_transaction("default"):
        if key is not None:
            found = RemoteCall.answer(call.user.pk, key)
            if found is not None:
                if found[0] != method:
                    raise ConfigError("Idempotency-Key", f"was used for {found[0]} already")
                return found[1]
        try:
            for index, (name, deferred) in enumerate(pending):
                try:
                    # Each checks before it writes, and DjangoStorage writes atomically.
                    METHODS[name](deferred)
                except CALL_ERRORS as e:
                    raise PendingFailed(index, name, e) from e
            with transaction.atomic():
                result = handler(call)
        except (PendingFailed, *CALL_ERRORS) as e:
            failure = e  # raised once the writes before it are committed
        else:
            if key is not None:
                RemoteCall.record(call.user.pk, key, method, result)
    if failure is not None:
        raise failure
    return result
