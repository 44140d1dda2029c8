"""The remote storage's calls: each checks its arguments and rights, then runs on DjangoStorage.

``studies/api/remote_storage.py`` is the endpoint that receives them. Every
argument is checked before anything is written, within the same bounds as the
REST API (HUB_MAX_PARAMS, HUB_MAX_CHOICES, HUB_MAX_JSON_DEPTH,
HUB_MAX_USER_ATTRS_BYTES, ...), so a careless or hostile client gets a 400
naming the argument, and nothing it stores can break a read of the study.

Rights are the REST API's (studies/models/team.py): a study the token may not
read does not exist for it; a write needs ``write_rights``, as ``Study.can_edit``;
a new study is the token user's, or its team's for a token limited to a team.
Trials of the hub's jobs are their workers' alone: remote clients read them but
neither write them nor see them as stale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState
from optuna_hub_client import _wire

from studies.actions import do_delete_study
from studies.config.errors import ConfigError
from studies.config.study import (
    MAX_DIRECTIONS,
    NAME_MAX_LENGTH,
    PARAM_NAME_MAX_LENGTH,
    check_json,
    check_text,
)
from studies.models import AuditEntry, JobTrial, Study, Trial
from studies.models.team import READ, read_rights, token_limits, write_rights
from studies.ops.metrics import count_ask, count_tell
from studies.storage import DjangoStorage
from studies.storage.sqlite import write_transaction

MAX_ID = 2**63 - 1
ATTR_KEY_MAX_LENGTH = 512
# Ten years: any longer and now - grace is before the first datetime.
MAX_GRACE_SECONDS = 10 * 365 * 86400


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


# Rights: plain queries, since a trial's calls check rights several times and the
# ORM's cost would be most of theirs. A study the caller may not read is, to
# them, one that does not exist.

STUDY_COLUMNS = "s.name, s.owner_id, s.team_id, s.visibility"
STUDY_QUERY = f"SELECT {STUDY_COLUMNS}, s.{{column}} FROM {Study._meta.db_table} s WHERE s.id = %s"

TRIAL_QUERY = (
    f"SELECT {STUDY_COLUMNS}, j.job_id, t.{{column}} FROM {Trial._meta.db_table} t"
    f" JOIN {Study._meta.db_table} s ON s.id = t.study_id"
    f" LEFT JOIN {JobTrial._meta.db_table} j ON j.trial_id = t.id WHERE t.id = %s"
)


def found_row(call: Call, query: str, pk: int, missing: str) -> tuple[Any, ...]:
    """The row, if it is of a study the caller may read; else KeyError(missing)."""
    with connection.cursor() as cursor:
        cursor.execute(query, [pk])
        row = cursor.fetchone()
    if row is None or not read_rights(call.user, *row[1:4]):
        raise KeyError(missing)
    return row


def check_write(call: Call, row: tuple[Any, ...]) -> None:
    name, owner_id, team_id = row[:3]
    if not write_rights(call.user, owner_id, team_id):
        if token_limits(call.user)[0] == READ:
            raise PermissionError("This API token's scope is read: it may only read.")
        raise PermissionError(f"You may not change study {name!r}: it is not yours.")


def readable_study(call: Call, study_id: int, column: str = "id") -> tuple[Any, ...]:
    query = STUDY_QUERY.format(column=column)
    return found_row(call, query, study_id, f"No study with study_id {study_id} exists.")


def readable_trial(call: Call, trial_id: int, column: str = "id") -> tuple[Any, ...]:
    query = TRIAL_QUERY.format(column=column)
    return found_row(call, query, trial_id, f"No trial with trial_id {trial_id} exists.")


def writable_study(call: Call, study_id: int, column: str = "id") -> Any:
    """Check that the caller may change the study; return its ``column`` as stored."""
    row = readable_study(call, study_id, column)
    check_write(call, row)
    return row[-1]


def writable_trial(call: Call, trial_id: int, column: str = "id") -> Any:
    """Check that the caller may write to the trial; return its ``column`` as stored."""
    row = readable_trial(call, trial_id, column)
    check_write(call, row)
    name, job_id, value = row[0], row[-2], row[-1]
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


def check_param_value(field: str, value: float, distribution: BaseDistribution) -> None:
    """Refuse a value no read could turn back into the parameter (NaN, a missing choice).

    Out of range is allowed, as Optuna allows it for enqueued trials' fixed params.
    """
    if not math.isfinite(value):
        raise ConfigError(field, "must be a finite number")
    if isinstance(distribution, CategoricalDistribution):
        if value != int(value) or not 0 <= value < len(distribution.choices):
            limit = len(distribution.choices) - 1
            raise ConfigError(field, f"must be the index of a choice, 0 to {limit}")


# Studies


def create_new_study(call: Call) -> int:
    names = call.arg("directions")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_DIRECTIONS:
        raise ConfigError("directions", f"must list 1 to {MAX_DIRECTIONS} directions")
    if any(name not in ("minimize", "maximize") for name in names):
        raise ConfigError("directions", 'must each be "minimize" or "maximize"')
    name = call.text("study_name", NAME_MAX_LENGTH)
    scope, team_id = token_limits(call.user)
    if scope == READ:
        raise PermissionError("This API token's scope is read: it may only read.")
    if team_id is not None and not write_rights(call.user, None, team_id):
        raise PermissionError("You are not an editor of the team this API token is limited to.")
    with write_transaction("default"):
        study_id = call.storage.create_new_study(_wire.directions_from_wire(names), name)
        # A token limited to a team makes the team's studies; else the user's own.
        placed = {"owner": call.user, "team_id": team_id}
        Study.objects.filter(pk=study_id).update(**placed)
        study = Study(pk=study_id, name=name, team_id=team_id)
        AuditEntry.record(call.user, AuditEntry.STUDY_CREATED, f"study {name}", study=study)
    return study_id


def delete_study(call: Call) -> None:
    study_id = call.id("study_id")
    writable_study(call, study_id)
    do_delete_study(Study.objects.get(pk=study_id), call.user)


def read_study_id(call: Call) -> int:
    study_id = call.id("study_id")
    readable_study(call, study_id)
    return study_id


def study_getter(name: str) -> Callable[[Call], Any]:
    def get(call: Call) -> Any:
        return getattr(call.storage, name)(read_study_id(call))

    return get


def get_study_id_from_name(call: Call) -> int:
    name = call.text("study_name", NAME_MAX_LENGTH)
    study_id = call.storage.get_study_id_from_name(name)
    try:
        readable_study(call, study_id)
    except KeyError:
        raise KeyError(f"No such study {name}.") from None  # the storage's own words
    return study_id


def get_study_directions(call: Call) -> list[str]:
    return _wire.directions_to_wire(call.storage.get_study_directions(read_study_id(call)))


def get_all_studies(call: Call) -> list[dict[str, Any]]:
    readable = set(Study.objects.readable_by(call.user).values_list("pk", flat=True))
    studies = call.storage.get_all_studies()
    return [_wire.study_to_wire(s) for s in studies if s._study_id in readable]


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
        distribution = check_distribution(f"{field}.distributions.{name}", dist_json)
        value = params[name]
        if type(value) not in (int, float):
            raise ConfigError(f"{field}.params.{name}", "must be a number")
        check_param_value(f"{field}.params.{name}", value, distribution)
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
    if template is None:
        count_ask("remote")  # Optuna's ask (a template is add_trial, enqueue, copy)
    return _wire.trial_to_wire(call.storage.get_trial(trial_id))


def set_trial_param(call: Call) -> None:
    trial_id = call.id("trial_id")
    name = call.text("param_name", PARAM_NAME_MAX_LENGTH, allow_empty=False)
    value = call.number("param_value_internal")
    distribution = check_distribution("distribution", call.arg("distribution"))
    check_param_value("param_value_internal", value, distribution)
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
    if updated and state == TrialState.RUNNING:
        count_ask("remote")  # Optuna's ask of an enqueued trial
    elif updated and state.is_finished():
        count_tell("remote", state)
    # The client keeps the trial it changed: no get_trial follows.
    trial = call.storage.get_trial(trial_id) if updated else None
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


def attr_setter(target: str, kind: str) -> Callable[[Call], None]:
    """set_{target}_{kind}_attr, for a study or a trial, user or system attributes."""
    writable = writable_study if target == "study" else writable_trial

    def set_attr(call: Call) -> None:
        target_id = call.id(f"{target}_id")
        key, value = call.text("key", ATTR_KEY_MAX_LENGTH), call.json("value")
        current = json.loads(writable(call, target_id, f"{kind}_attrs"))
        check_attrs_size("value", {**current, key: value})
        getattr(call.storage, f"set_{target}_{kind}_attr")(target_id, key, value)

    return set_attr


def get_trial_id_from_study_id_trial_number(call: Call) -> int:
    study_id, number = read_study_id(call), call.id("trial_number")
    return call.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def get_trial(call: Call) -> dict[str, Any]:
    trial_id = call.id("trial_id")
    readable_trial(call, trial_id)
    return _wire.trial_to_wire(call.storage.get_trial(trial_id))


def trials_wanted(call: Call) -> tuple[int, int, list[int]]:
    """The study, the id the new trials are above, and the ids of the unfinished ones."""
    study_id, after, ids = read_study_id(call), call.id("after"), call.arg("ids")
    if not isinstance(ids, list) or len(ids) > settings.HUB_STORAGE_MAX_IDS:
        raise ConfigError("ids", f"must be a list of at most {settings.HUB_STORAGE_MAX_IDS} ids")
    if any(type(i) is not int for i in ids):
        raise ConfigError("ids", "must be integer ids")
    return study_id, after, ids


def read_trials(storage: DjangoStorage, wanted: tuple[int, int, list[int]]) -> dict[str, Any]:
    trials, more = storage.get_trials_since(*wanted, settings.HUB_STORAGE_PAGE_SIZE)
    return {"trials": [_wire.trial_to_wire(t) for t in trials], "more": more}


def get_trials(call: Call) -> dict[str, Any]:
    """Trials with an id above ``after`` (a page of them) and those of ``ids``."""
    return read_trials(call.storage, trials_wanted(call))


# Heartbeats


def record_heartbeat(call: Call) -> None:
    trial_id = call.id("trial_id")
    writable_trial(call, trial_id)
    Trial.objects.filter(pk=trial_id).update(heartbeat=timezone.now())


def get_stale_trial_ids(call: Call) -> list[int]:
    study_id, grace = call.id("study_id"), call.arg("grace_period")
    if type(grace) is not int or not 1 <= grace <= MAX_GRACE_SECONDS:
        raise ConfigError("grace_period", f"must be 1 to {MAX_GRACE_SECONDS} seconds")
    readable_study(call, study_id)  # KeyError for an unknown study
    stale = Trial.objects.filter(
        study_id=study_id,
        state=TrialState.RUNNING,
        job_link__isnull=True,  # a job's trials are its watchdog's (studies/jobs/tasks.py)
        heartbeat__lt=timezone.now() - timedelta(seconds=grace),
    )
    return list(stale.values_list("id", flat=True))


# Writes that return nothing, to a trial the client made: it may send them with its next call.
DEFERRABLE = {
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
}

METHODS: dict[str, Callable[[Call], Any]] = {
    "create_new_study": create_new_study,
    "delete_study": delete_study,
    "set_study_user_attr": attr_setter("study", "user"),
    "set_study_system_attr": attr_setter("study", "system"),
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
    "set_trial_user_attr": attr_setter("trial", "user"),
    "set_trial_system_attr": attr_setter("trial", "system"),
    "get_trial_id_from_study_id_trial_number": get_trial_id_from_study_id_trial_number,
    "get_trial": get_trial,
    "get_trials": get_trials,
    "record_heartbeat": record_heartbeat,
    "get_stale_trial_ids": get_stale_trial_ids,
}
