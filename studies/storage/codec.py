"""Trial rows to Optuna's FrozenTrial and back: columns, JSON and datetimes.

DjangoStorage and the job storage read and write trials with plain SQL in the
optimize loop; the column lists and conversions they share live here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from studies.models import TRIAL_ROW_FIELDS, Study, Trial, parse_distribution

TRIAL_TABLE = Trial._meta.db_table
STUDY_TABLE = Study._meta.db_table
JSON_COLUMNS = {"values", "params", "distributions", "intermediate_values"}
JSON_COLUMNS |= {"user_attrs", "system_attrs"}
# What an INSERT writes besides study_id and number.
NEW_TRIAL_COLUMNS = ["state", "values", "value", *TRIAL_ROW_FIELDS[4:]]


def quote(columns: Sequence[str]) -> str:
    # "values" is an SQL keyword: quote every column.
    return ", ".join(f'"{c}"' for c in columns)


TRIAL_COLUMNS = quote(TRIAL_ROW_FIELDS)


def _decode_datetime(value: Any) -> datetime | None:
    # PostgreSQL returns aware datetimes; SQLite returns Django's naive-UTC text.
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def decode_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A raw trial row (TRIAL_ROW_FIELDS order) as frozen_trial_from_row takes it."""
    trial_id, number, state, values, *json_columns, start, complete = row
    return (
        trial_id,
        number,
        state,
        None if values is None else json.loads(values),
        *(json.loads(v) for v in json_columns),
        _decode_datetime(start),
        _decode_datetime(complete),
    )


def to_local_naive(dt: datetime | None) -> datetime | None:
    """Optuna's datetimes are naive local time (datetime.now()); ours are aware UTC."""
    return None if dt is None else dt.astimezone().replace(tzinfo=None)


def to_aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    # A naive datetime is local time, as Optuna creates it.
    return dt.astimezone(UTC)


def frozen_trial_from_row(
    trial_id: int,
    number: int,
    state: int,
    values: list[float] | None,
    params: dict[str, float],
    distributions: dict[str, str],
    intermediate_values: dict[str, float],
    user_attrs: dict[str, Any],
    system_attrs: dict[str, Any],
    datetime_start: datetime | None,
    datetime_complete: datetime | None,
) -> FrozenTrial:
    dists = {name: parse_distribution(d) for name, d in distributions.items()}
    return FrozenTrial(
        number=number,
        state=TrialState(state),
        value=None,
        values=values,
        datetime_start=to_local_naive(datetime_start),
        datetime_complete=to_local_naive(datetime_complete),
        params={name: dists[name].to_external_repr(v) for name, v in params.items()},
        distributions=dists,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        intermediate_values={int(step): v for step, v in intermediate_values.items()},
        trial_id=trial_id,
    )
