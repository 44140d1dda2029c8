"""The remote Optuna storage: each ``optuna_hub_client.HubStorage`` call, run on DjangoStorage.

``POST /api/storage/v1/<method>/`` with a JSON object of arguments answers
``{"result": ...}``, or ``{"error": <name>, "detail": <message>}`` with the
exception's name, which the client raises again (KeyError 404,
DuplicatedStudyError and UpdateFinishedTrialError 409, ValueError and
InvalidRequest 400, PermissionError 403). The trial format is
``optuna_hub_client._wire``'s, so both ends share one definition.

Rights are the REST API's: a token (no session, so no cross-site request can
call it) reads every study; a write needs ``Study.can_edit``; a new study is
the token user's. Trials of the hub's jobs are their workers' alone: remote
clients read them but neither write them nor see them as stale.

Every argument is checked before anything is written, within the same bounds
as the REST API (HUB_MAX_PARAMS, HUB_MAX_CHOICES, HUB_MAX_JSON_DEPTH,
HUB_MAX_USER_ATTRS_BYTES, ...), so a careless or hostile client gets a 400
naming the argument. A plain Django view rather than DRF: it runs about ten
times per trial, and DRF's request wrapping would be most of its cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from csp.decorators import csp_exempt
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.trial import TrialState
from optuna_hub_client import _wire
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

from studies.actions import do_delete_study
from studies.api.authentication import token_user_light
from studies.config.errors import ConfigError
from studies.config.study import (
    MAX_DIRECTIONS,
    NAME_MAX_LENGTH,
    PARAM_NAME_MAX_LENGTH,
    check_json,
    check_text,
)
from studies.models import JobTrial, RemoteCall, Study, Trial
from studies.storage import DjangoStorage, get_storage
from studies.storage.sqlite import write_transaction

MAX_ID = 2**63 - 1
ATTR_KEY_MAX_LENGTH = 512
# Ten years: any longer and now - grace is before the first datetime.
MAX_GRACE_SECONDS = 10 * 365 * 86400


class Refused(Exception):
    """A call the hub will not run: answered with ``status`` and the error's name."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass
class Call:
    user: Any
    args: dict[str, Any]
    storage: DjangoStorage

    def arg(self, name: str) -> Any:
        if name not in self.args:
            raise ConfigError(name, "is required")
        return self.args[name]

    def id(self, name: str) -> int:
        value = self.arg(name)
        if type(value) is not int or not 0 <= value <= MAX_ID:
            raise ConfigError(name, "must be an integer id")
        return value

    def text(self, name: str, max_length: int, allow_empty: bool = True) -> str:
        value = self.arg(name)
        if not isinstance(value, str) or len(value) > max_length:
            raise ConfigError(name, f"must be a string of at most {max_length} characters")
        if not value and not allow_empty:
            raise ConfigError(name, "must not be empty")
        check_text(name, value)
        return value

    def number(self, name: str) -> float:
        value = self.arg(name)
        if type(value) not in (int, float):
            raise ConfigError(name, "must be a number")
        return float(value)

    def json(self, name: str) -> Any:
        value = self.arg(name)
        check_json(name, value)
        return value


def json_response(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def error_response(status: int, error: str, detail: str) -> HttpResponse:
    return json_response({"error": error, "detail": detail}, status)


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
        call = Call(user, parse_args(request), get_storage())
        key = request.headers.get("Idempotency-Key")
        result = once(call, method, key, handler) if key else handler(call)
    except Refused as e:
        return error_response(e.status, e.error, e.detail)
    except ConfigError as e:
        return error_response(400, "InvalidRequest", f"{e.field}: {e.message}")
    except KeyError as e:
        return error_response(404, "KeyError", str(e.args[0]) if e.args else "Not found.")
    except (DuplicatedStudyError, UpdateFinishedTrialError) as e:
        return error_response(409, type(e).__name__, str(e))
    except (PermissionError, PermissionDenied) as e:
        return error_response(403, "PermissionError", str(e))
    except ValueError as e:
        return error_response(400, "ValueError", str(e))
    return json_response({"result": result})


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


def once(call: Call, method: str, key: str, handler: Callable[[Call], Any]) -> Any:
    """Run a call at most once per key: a retry gets the first answer."""
    if len(key) > 64:
        raise ConfigError("Idempotency-Key", "must be at most 64 characters")
    with write_transaction("default"):
        found = list(
            RemoteCall.objects.filter(user=call.user, key=key).values_list("method", "result")
        )
        if found:
            if found[0][0] != method:
                raise ConfigError("Idempotency-Key", f"was used for {found[0][0]} already")
            return found[0][1]
        result = handler(call)
        RemoteCall.objects.create(user=call.user, key=key, method=method, result=result)
    return result


# Rights


def writable_study(call: Call, study_id: int) -> Study:
    """The study, if the caller may change it (KeyError, PermissionError naming it)."""
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        raise KeyError(f"No study with study_id {study_id} exists.")
    if not study.can_edit(call.user):
        raise PermissionError(f"You may not change study {study.name!r}: it is not yours.")
    return study


TRIAL_WRITE_QUERY = (
    f"SELECT s.name, s.owner_id, j.job_id, t.{{column}} FROM {Trial._meta.db_table} t"
    f" JOIN {Study._meta.db_table} s ON s.id = t.study_id"
    f" LEFT JOIN {JobTrial._meta.db_table} j ON j.trial_id = t.id WHERE t.id = %s"
)


def writable_trial(call: Call, trial_id: int, column: str = "id") -> Any:
    """Check that the caller may write to the trial; return its ``column`` as stored."""
    with connection.cursor() as cursor:
        cursor.execute(TRIAL_WRITE_QUERY.format(column=column), [trial_id])
        row = cursor.fetchone()
    if row is None:
        raise KeyError(f"No trial with trial_id {trial_id} exists.")
    name, owner_id, job_id, value = row
    user = call.user
    if not (user.is_staff or owner_id == user.pk):
        raise PermissionError(f"You may not change study {name!r}: it is not yours.")
    if job_id is not None:
        raise PermissionError(
            f"Trial {trial_id} of study {name!r} is run by the hub's job {job_id}; "
            "only its worker writes to it."
        )
    return value


def check_attrs_size(field: str, attrs: dict[str, Any]) -> None:
    size = len(json.dumps(attrs))
    limit = settings.HUB_MAX_USER_ATTRS_BYTES
    if size > limit:
        raise ConfigError(field, f"would make the attributes {size} bytes; at most {limit}")


def check_distribution(field: str, dist_json: Any) -> Any:
    if not isinstance(dist_json, str):
        raise ConfigError(field, "must be a distribution's JSON")
    try:
        distribution = _wire.distribution(dist_json)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(field, f"is not a distribution: {e}") from None
    if isinstance(distribution, CategoricalDistribution):
        limit = settings.HUB_MAX_CHOICES
        if len(distribution.choices) > limit:
            raise ConfigError(field, f"has more than {limit} choices")
        check_json(field, list(distribution.choices))
    return distribution


# Studies


def create_new_study(call: Call) -> int:
    names = call.arg("directions")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_DIRECTIONS:
        raise ConfigError("directions", f"must list 1 to {MAX_DIRECTIONS} directions")
    if any(name not in ("minimize", "maximize") for name in names):
        raise ConfigError("directions", 'must each be "minimize" or "maximize"')
    name = call.text("study_name", NAME_MAX_LENGTH)
    with write_transaction("default"):
        study_id = call.storage.create_new_study(_wire.directions_from_wire(names), name)
        Study.objects.filter(pk=study_id).update(owner=call.user)
    return study_id


def delete_study(call: Call) -> None:
    study_id = call.id("study_id")
    writable_study(call, study_id)
    do_delete_study(Study.objects.get(pk=study_id), call.user)


def set_study_attr(kind: str) -> Callable[[Call], None]:
    def set_attr(call: Call) -> None:
        study_id = call.id("study_id")
        key, value = call.text("key", ATTR_KEY_MAX_LENGTH), call.json("value")
        writable_study(call, study_id)
        current = getattr(call.storage, f"get_study_{kind}_attrs")(study_id)
        check_attrs_size("value", {**current, key: value})
        getattr(call.storage, f"set_study_{kind}_attr")(study_id, key, value)

    return set_attr


def study_getter(name: str) -> Callable[[Call], Any]:
    def get(call: Call) -> Any:
        return getattr(call.storage, name)(call.id("study_id"))

    return get


def get_study_id_from_name(call: Call) -> int:
    return call.storage.get_study_id_from_name(call.text("study_name", NAME_MAX_LENGTH))


def get_study_directions(call: Call) -> list[str]:
    return _wire.directions_to_wire(call.storage.get_study_directions(call.id("study_id")))


def get_all_studies(call: Call) -> list[dict[str, Any]]:
    return [_wire.study_to_wire(s) for s in call.storage.get_all_studies()]


# Trials


def template_from_args(call: Call) -> Any:
    data = call.args.get("template_trial")
    if data is None:
        return None
    field = "template_trial"
    if not isinstance(data, dict):
        raise ConfigError(field, "must be a trial object or null")
    check_json(field, data)
    params, dists = data.get("params"), data.get("distributions")
    if not isinstance(params, dict) or not isinstance(dists, dict) or params.keys() != dists.keys():
        raise ConfigError(f"{field}.params", "must name the same parameters as its distributions")
    if len(params) > settings.HUB_MAX_PARAMS:
        raise ConfigError(f"{field}.params", f"holds more than {settings.HUB_MAX_PARAMS}")
    for name, dist_json in dists.items():
        if not 1 <= len(name) <= PARAM_NAME_MAX_LENGTH:
            raise ConfigError(f"{field}.params", f"names must be 1 to {PARAM_NAME_MAX_LENGTH} long")
        check_distribution(f"{field}.distributions.{name}", dist_json)
    for attrs in ("user_attrs", "system_attrs"):
        if not isinstance(data.get(attrs), dict):
            raise ConfigError(f"{field}.{attrs}", "must be an object")
        check_attrs_size(f"{field}.{attrs}", data[attrs])
    steps = data.get("intermediate_values")
    if not isinstance(steps, dict) or len(steps) > settings.HUB_MAX_INTERMEDIATE_VALUES:
        limit = settings.HUB_MAX_INTERMEDIATE_VALUES
        raise ConfigError(f"{field}.intermediate_values", f"must be an object of at most {limit}")
    try:
        return _wire.trial_from_wire(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(field, f"is not a trial: {e!r}") from None


def create_new_trial(call: Call) -> dict[str, Any]:
    study_id = call.id("study_id")
    template = template_from_args(call)
    writable_study(call, study_id)
    trial_id = call.storage.create_new_trial(study_id, template_trial=template)
    return _wire.trial_to_wire(call.storage.get_trial(trial_id))


def set_trial_param(call: Call) -> None:
    trial_id = call.id("trial_id")
    name = call.text("param_name", PARAM_NAME_MAX_LENGTH, allow_empty=False)
    value = call.number("param_value_internal")
    distribution = check_distribution("distribution", call.arg("distribution"))
    params = json.loads(writable_trial(call, trial_id, "params"))
    if name not in params and len(params) >= settings.HUB_MAX_PARAMS:
        limit = settings.HUB_MAX_PARAMS
        raise ConfigError("param_name", f"the trial has {limit} parameters, the most allowed")
    call.storage.set_trial_param(trial_id, name, value, distribution)


def set_trial_state_values(call: Call) -> dict[str, Any]:
    trial_id = call.id("trial_id")
    state_name = call.arg("state")
    if state_name not in TrialState.__members__:
        raise ConfigError("state", f"must be one of {', '.join(TrialState.__members__)}")
    values = call.args.get("values")
    if values is not None:
        if not isinstance(values, list) or len(values) > MAX_DIRECTIONS:
            raise ConfigError("values", f"must be a list of at most {MAX_DIRECTIONS} numbers")
        if any(type(v) not in (int, float) for v in values):
            raise ConfigError("values", "must be numbers")
    state = TrialState[state_name]
    writable_trial(call, trial_id)
    updated = call.storage.set_trial_state_values(trial_id, state, values)
    trial = call.storage.get_trial(trial_id) if updated and state.is_finished() else None
    return {"updated": updated, "trial": trial and _wire.trial_to_wire(trial)}


def set_trial_intermediate_value(call: Call) -> None:
    trial_id = call.id("trial_id")
    step = call.arg("step")
    if type(step) is not int or abs(step) > MAX_ID:
        raise ConfigError("step", "must be an integer")
    value = call.number("intermediate_value")
    steps = json.loads(writable_trial(call, trial_id, "intermediate_values"))
    limit = settings.HUB_MAX_INTERMEDIATE_VALUES
    if str(step) not in steps and len(steps) >= limit:
        raise ConfigError("step", f"the trial has {limit} intermediate values, the most allowed")
    call.storage.set_trial_intermediate_value(trial_id, step, value)


def set_trial_attr(kind: str) -> Callable[[Call], None]:
    def set_attr(call: Call) -> None:
        trial_id = call.id("trial_id")
        key, value = call.text("key", ATTR_KEY_MAX_LENGTH), call.json("value")
        current = json.loads(writable_trial(call, trial_id, f"{kind}_attrs"))
        check_attrs_size("value", {**current, key: value})
        getattr(call.storage, f"set_trial_{kind}_attr")(trial_id, key, value)

    return set_attr


def get_trial_id_from_study_id_trial_number(call: Call) -> int:
    study_id, number = call.id("study_id"), call.id("trial_number")
    return call.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def get_trial(call: Call) -> dict[str, Any]:
    return _wire.trial_to_wire(call.storage.get_trial(call.id("trial_id")))


def get_trials(call: Call) -> dict[str, Any]:
    """Trials with an id above ``after`` (a page of them) and those of ``ids``."""
    study_id, after, ids = call.id("study_id"), call.id("after"), call.arg("ids")
    if not isinstance(ids, list) or len(ids) > settings.HUB_STORAGE_MAX_IDS:
        raise ConfigError("ids", f"must be a list of at most {settings.HUB_STORAGE_MAX_IDS} ids")
    if any(type(i) is not int for i in ids):
        raise ConfigError("ids", "must be integer ids")
    limit = settings.HUB_STORAGE_PAGE_SIZE
    trials, more = call.storage.get_trials_since(study_id, after, ids, limit)
    return {"trials": [_wire.trial_to_wire(t) for t in trials], "more": more}


# Heartbeats


def record_heartbeat(call: Call) -> None:
    trial_id = call.id("trial_id")
    writable_trial(call, trial_id)
    Trial.objects.filter(pk=trial_id).update(heartbeat=timezone.now())


def get_stale_trial_ids(call: Call) -> list[int]:
    study_id, grace = call.id("study_id"), call.arg("grace_period")
    if type(grace) is not int or not 1 <= grace <= MAX_GRACE_SECONDS:
        raise ConfigError("grace_period", f"must be 1 to {MAX_GRACE_SECONDS} seconds")
    call.storage.get_study_name_from_id(study_id)  # KeyError for an unknown study
    stale = Trial.objects.filter(
        study_id=study_id,
        state=TrialState.RUNNING,
        job_link__isnull=True,  # a job's trials are its watchdog's (studies/jobs/tasks.py)
        heartbeat__lt=timezone.now() - timedelta(seconds=grace),
    )
    return list(stale.values_list("id", flat=True))


METHODS: dict[str, Callable[[Call], Any]] = {
    "create_new_study": create_new_study,
    "delete_study": delete_study,
    "set_study_user_attr": set_study_attr("user"),
    "set_study_system_attr": set_study_attr("system"),
    "get_study_id_from_name": get_study_id_from_name,
    "get_study_name_from_id": study_getter("get_study_name_from_id"),
    "get_study_directions": get_study_directions,
    "get_study_user_attrs": study_getter("get_study_user_attrs"),
    "get_study_system_attrs": study_getter("get_study_system_attrs"),
    "get_all_studies": get_all_studies,
    "create_new_trial": create_new_trial,
    "set_trial_param": set_trial_param,
    "set_trial_state_values": set_trial_state_values,
    "set_trial_intermediate_value": set_trial_intermediate_value,
    "set_trial_user_attr": set_trial_attr("user"),
    "set_trial_system_attr": set_trial_attr("system"),
    "get_trial_id_from_study_id_trial_number": get_trial_id_from_study_id_trial_number,
    "get_trial": get_trial,
    "get_trials": get_trials,
    "record_heartbeat": record_heartbeat,
    "get_stale_trial_ids": get_stale_trial_ids,
}
