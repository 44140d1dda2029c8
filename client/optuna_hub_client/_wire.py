"""Optuna's trials and studies as the hub's storage protocol carries them (JSON).

Both ends use these functions: the client, and the hub's endpoint
(``studies/api/remote_storage.py``). A trial travels as its stored form: the
internal representation of each parameter and each distribution's JSON, so the
order of parameters is kept and nothing is converted twice. Floats travel as
Python's ``json`` writes them (``NaN`` and ``Infinity`` included), and
datetimes in UTC (ISO 8601), read back as naive local time as Optuna keeps them:
the hub and its clients need not share a time zone.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

# The protocol's version: the endpoint's path holds it, so an incompatible change
# is a new path and old clients get a clear 404 instead of a wrong answer.
PROTOCOL = 2  # 2: writes sent ahead of a call (_pending) and _sync


@functools.lru_cache(maxsize=4096)
def distribution(dist_json: str) -> BaseDistribution:
    """A distribution from its JSON; the same few distributions repeat in every trial."""
    return json_to_distribution(dist_json)


def _datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone().replace(tzinfo=None)


def _isoformat(value: datetime | None) -> str | None:
    # A naive datetime is local time, as Optuna creates it.
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def trial_to_wire(trial: FrozenTrial) -> dict[str, Any]:
    dists = trial.distributions
    return {
        "id": trial._trial_id,
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "datetime_start": _isoformat(trial.datetime_start),
        "datetime_complete": _isoformat(trial.datetime_complete),
        "params": {name: dists[name].to_internal_repr(v) for name, v in trial.params.items()},
        "distributions": {name: distribution_to_json(d) for name, d in dists.items()},
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
        "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
    }


def trial_from_wire(data: dict[str, Any]) -> FrozenTrial:
    dists = {name: distribution(d) for name, d in data["distributions"].items()}
    return FrozenTrial(
        number=data["number"],
        state=TrialState[data["state"]],
        value=None,
        values=data["values"],
        datetime_start=_datetime(data["datetime_start"]),
        datetime_complete=_datetime(data["datetime_complete"]),
        params={name: dists[name].to_external_repr(v) for name, v in data["params"].items()},
        distributions=dists,
        user_attrs=data["user_attrs"],
        system_attrs=data["system_attrs"],
        intermediate_values={int(k): v for k, v in data["intermediate_values"].items()},
        trial_id=data["id"],
    )


def directions_to_wire(directions: list[StudyDirection]) -> list[str]:
    return [d.name.lower() for d in directions]


def directions_from_wire(names: list[str]) -> list[StudyDirection]:
    return [StudyDirection[name.upper()] for name in names]


def study_to_wire(study: FrozenStudy) -> dict[str, Any]:
    return {
        "id": study._study_id,
        "name": study.study_name,
        "directions": directions_to_wire(study.directions),
        "user_attrs": study.user_attrs,
        "system_attrs": study.system_attrs,
    }


def study_from_wire(data: dict[str, Any]) -> FrozenStudy:
    return FrozenStudy(
        study_name=data["name"],
        direction=None,
        directions=directions_from_wire(data["directions"]),
        user_attrs=data["user_attrs"],
        system_attrs=data["system_attrs"],
        study_id=data["id"],
    )
