"""Trial rows to Optuna's FrozenTrial and back: columns, JSON and datetimes.

DjangoStorage and the job storage read and write trials with plain SQL in the
optimize loop; the column lists and conversions they share live here.

Decoding is on the path of a sampler's first read of a study (every trial), so
it is lean: orjson for the JSON columns (the standard module for what orjson
refuses or reads otherwise: NaN, Infinity, integers past 64 bits), each distinct ``distributions``
text parsed once, and no garbage collection while a batch of rows is decoded.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from studies.models import TRIAL_ROW_FIELDS, Study, Trial, parse_distribution

TRIAL_TABLE = Trial._meta.db_table
STUDY_TABLE = Study._meta.db_table
JSON_COLUMNS = {"values", "params", "distributions", "intermediate_values"}
JSON_COLUMNS |= {"user_attrs", "system_attrs"}
# What an INSERT writes besides study_id and number.
NEW_TRIAL_COLUMNS = ["state", "values", "value", *TRIAL_ROW_FIELDS[4:], "elapsed"]
STATES = {state.value: state for state in TrialState}


def quote(columns: Sequence[str]) -> str:
    # "values" is an SQL keyword: quote every column.
    return ", ".join(f'"{c}"' for c in columns)


TRIAL_COLUMNS = quote(TRIAL_ROW_FIELDS)


# Unfinished trials re-read by id, up to this many; past it, by an id range.
MAX_LISTED_IDS = 500


def new_or_unfinished(last_id: int, unfinished: list[int]) -> tuple[str, list[int]]:
    """The WHERE condition, and its parameters, for a study's trials that are new
    (an id above ``last_id``) or were ``unfinished`` at the last read."""
    if len(unfinished) > MAX_LISTED_IDS:
        return "id >= %s", [min(unfinished)]
    condition = "id > %s"
    if unfinished:
        condition += f" OR id IN ({', '.join(['%s'] * len(unfinished))})"
    return condition, [last_id, *unfinished]


def loads_numbers(text: str) -> Any:
    """A column of floats (values, params, intermediate values), as ``json.loads`` reads it."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # NaN, Infinity


# orjson reads an integer past 64 bits as a float: such text goes to json.
_LONG_INTEGER = re.compile(r"\d{20}")


def loads(text: str) -> Any:
    """Any JSON column's value (attributes hold whatever users set), exactly as
    ``json.loads`` reads it."""
    if text == "{}":
        return {}
    if _LONG_INTEGER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, a lone surrogate
    return json.loads(text)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Decoding 100 000 rows makes millions of objects and no cycles: collecting
    while the batch grows would scan it again and again (twice the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.lru_cache(maxsize=4096)
def distributions_of(
    text: str,
) -> tuple[dict[str, BaseDistribution], dict[str, Callable[[float], Any]]]:
    # Trials of a study share a handful of distributions texts: each is parsed once.
    distributions = {name: parse_distribution(d) for name, d in loads(text).items()}
    return distributions, {name: d.to_external_repr for name, d in distributions.items()}


def to_utc(value: Any) -> datetime | None:
    """A datetime column as read (PostgreSQL: aware; SQLite: naive UTC, or its text), aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _local_naive(value: Any) -> datetime | None:
    """A datetime column as read, as Optuna's naive local time."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if time.timezone == 0 and not time.daylight and not value.utcoffset():
        # Local time is UTC: no conversion.
        return value if value.tzinfo is None else value.replace(tzinfo=None)
    return to_utc(value).astimezone().replace(tzinfo=None)


def to_aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    # A naive datetime is local time, as Optuna creates it.
    return dt.astimezone(UTC)


def frozen_trial(row: Sequence[Any]) -> FrozenTrial:
    """A raw trial row (TRIAL_ROW_FIELDS order) as Optuna's FrozenTrial."""
    trial_id, number, state, values, params, dists, steps, user, system, start, complete = row
    distributions, external = distributions_of(dists)
    return FrozenTrial(
        number=number,
        state=STATES[state],
        value=None,
        values=None if values is None else loads_numbers(values),
        datetime_start=_local_naive(start),
        datetime_complete=_local_naive(complete),
        params={name: external[name](v) for name, v in loads_numbers(params).items()},
        distributions=dict(distributions),
        user_attrs=loads(user),
        system_attrs=loads(system),
        intermediate_values={int(step): v for step, v in loads_numbers(steps).items()},
        trial_id=trial_id,
    )


def copied(trial: FrozenTrial) -> FrozenTrial:
    """A deep copy of a trial ``frozen_trial`` built, several times faster than
    ``copy.deepcopy`` (Optuna's ``study.trials`` copies every trial): params and
    intermediate values hold numbers and choices, distributions only scalars and
    tuples, so one level of copying suffices; attributes may nest."""
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=None if trial.values is None else list(trial.values),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions={name: _twin(d) for name, d in trial.distributions.items()},
        user_attrs=copy.deepcopy(trial.user_attrs) if trial.user_attrs else {},
        system_attrs=copy.deepcopy(trial.system_attrs) if trial.system_attrs else {},
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial._trial_id,
    )


def _twin(distribution: BaseDistribution) -> BaseDistribution:
    # Its attributes are numbers, booleans and a tuple of choices: a shallow copy
    # is a deep one, made without copy.copy's reduce protocol (ten times slower).
    twin = object.__new__(type(distribution))
    twin.__dict__.update(distribution.__dict__)
    return twin
