"""Optuna's storage interface over the hub's Django models.

Every path in the hub goes through DjangoStorage: workers run
``optuna.load_study(storage=DjangoStorage())``, the REST ask/tell endpoints call
``study.ask()``/``study.tell()``, and imports are ``optuna.copy_study``.

Concurrency: processes coordinate through the database only. Writes to a trial
are read-modify-write transactions on its row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's IMMEDIATE transactions serialize writers). A new trial
takes the next number under a lock on its study's row, so numbers are unique
and gap-free per study.

Speed: finished trials are immutable, so each DjangoStorage caches them and a
sampler's ``get_all_trials`` reads only trials that are new or were unfinished
at the previous read: one query returning a handful of rows.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connections
from django.utils import timezone
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from studies.models import Study, Trial, first_value, parse_distribution
from studies.storage.cache import StudyTrials
from studies.storage.codec import (
    JSON_COLUMNS,
    NEW_TRIAL_COLUMNS,
    STUDY_TABLE,
    TRIAL_COLUMNS,
    TRIAL_TABLE,
    copied,
    frozen_trial,
    gc_paused,
    new_or_unfinished,
    quote,
    to_aware,
    to_utc,
)
from studies.storage.heartbeat import RowHeartbeat, StaleTrialCallback
from studies.storage.sqlite import write_transaction
from studies.storage.summary import SummaryReads, summary_update


class DjangoStorage(SummaryReads, BaseStorage, RowHeartbeat):
    """An Optuna storage whose rows are the hub's Study and Trial models.

    ``heartbeat_interval``, ``grace_period`` and ``heartbeat_stale_trial_callback``
    (formerly ``failed_trial_callback``) work as for ``optuna.storages.RDBStorage``;
    ``using`` names the Django database alias.
    """

    def __init__(
        self,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: StaleTrialCallback | None = None,
        using: str = "default",
        failed_trial_callback: StaleTrialCallback | None = None,
    ) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer.")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("grace_period must be a positive integer.")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = (
            heartbeat_stale_trial_callback or failed_trial_callback
        )
        self.using = using
        self._init_cache()

    @property
    def _study_rows(self) -> Any:
        return Study.objects.db_manager(self.using)

    @property
    def _trial_rows(self) -> Any:
        return Trial.objects.db_manager(self.using)

    def _init_cache(self) -> None:
        self._lock = threading.RLock()
        self._studies: dict[int, StudyTrials] = {}
        self._directions: dict[int, list[StudyDirection]] = {}
        self._param_distributions: dict[int, dict[str, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_studies", "_directions", "_param_distributions"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    # Studies

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        if study_name is None:
            study_name = DEFAULT_STUDY_NAME_PREFIX + str(uuid.uuid4())
        try:
            with write_transaction(self.using):
                study = self._study_rows.create(
                    name=study_name, directions=[d.name.lower() for d in directions]
                )
        except IntegrityError:
            raise DuplicatedStudyError(f"A study named '{study_name}' already exists.") from None
        return study.pk

    def delete_study(self, study_id: int) -> None:
        deleted, _ = self._study_rows.filter(pk=study_id).delete()
        if not deleted:
            raise KeyError(f"No study with study_id {study_id} exists.")
        with self._lock:
            self._studies.pop(study_id, None)
            self._param_distributions.pop(study_id, None)

    def _set_study_attr(self, study_id: int, column: str, key: str, value: Any) -> None:
        with write_transaction(self.using):
            attrs = self._study_column(study_id, column, for_update=True)
            attrs[key] = value
            self._study_rows.filter(pk=study_id).update(**{column: attrs})

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._set_study_attr(study_id, "user_attrs", key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._set_study_attr(study_id, "system_attrs", key, value)

    def _study_column(self, study_id: int, column: str, for_update: bool = False) -> Any:
        query = self._study_rows.filter(pk=study_id)
        if for_update:
            query = query.select_for_update()
        found = list(query.values_list(column, flat=True)[:1])
        if not found:
            raise KeyError(f"No study with study_id {study_id} exists.")
        return found[0]

    def get_study_id_from_name(self, study_name: str) -> int:
        found = list(self._study_rows.filter(name=study_name).values_list("id", flat=True)[:1])
        if not found:
            raise KeyError(f"No such study {study_name}.")
        return found[0]

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._study_column(study_id, "name")

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        # Directions never change: read them once per process.
        if study_id not in self._directions:
            names = self._study_column(study_id, "directions")
            self._directions[study_id] = [StudyDirection[n.upper()] for n in names]
        return list(self._directions[study_id])

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._study_column(study_id, "user_attrs")

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._study_column(study_id, "system_attrs")

    def get_all_studies(self) -> list[FrozenStudy]:
        rows = self._study_rows.order_by("id").values_list(
            "id", "name", "directions", "user_attrs", "system_attrs"
        )
        return [
            FrozenStudy(
                study_name=name,
                direction=None,
                directions=[StudyDirection[n.upper()] for n in directions],
                user_attrs=user_attrs,
                system_attrs=system_attrs,
                study_id=study_id,
            )
            for study_id, name, directions, user_attrs, system_attrs in rows
        ]

    # Trials. The statements of the optimize loop are plain SQL: building them
    # through the ORM cost more than running them.

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)

    def _for_update(self) -> str:
        return " FOR UPDATE" if connections[self.using].features.has_select_for_update else ""

    def _adapt_datetime(self, dt: datetime | None) -> Any:
        return connections[self.using].ops.adapt_datetimefield_value(dt)

    def _summary_update(self, study_id: int, *change: Any) -> tuple[str, list[Any]]:
        """The statement that keeps the study's trial summary true (``summary_update``)."""
        now = self._adapt_datetime(timezone.now())
        return summary_update(study_id, *change, self.get_study_directions(study_id), now)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        empty: dict[str, Any] = {}
        row: dict[str, Any] = {
            "state": TrialState.RUNNING,
            "datetime_start": timezone.now(),
            **dict.fromkeys(["params", "distributions", "intermediate_values"], empty),
            **dict.fromkeys(["user_attrs", "system_attrs"], empty),
        }
        if template_trial is not None:
            t = template_trial
            row = {
                "state": t.state,
                "values": t.values,
                "value": first_value(t.values),
                "params": {
                    name: t.distributions[name].to_internal_repr(value)
                    for name, value in t.params.items()
                },
                "distributions": {
                    name: distribution_to_json(d) for name, d in t.distributions.items()
                },
                "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
                "user_attrs": t.user_attrs,
                "system_attrs": t.system_attrs,
                "datetime_start": to_aware(t.datetime_start),
                "datetime_complete": to_aware(t.datetime_complete),
            }
            if t.datetime_start and t.datetime_complete:
                row["elapsed"] = (t.datetime_complete - t.datetime_start).total_seconds()
            self._register_distributions(study_id, row["distributions"])
        columns = ["study_id", "number", *NEW_TRIAL_COLUMNS]
        values = [self._encode(name, row.get(name)) for name in NEW_TRIAL_COLUMNS]
        with write_transaction(self.using):
            # Locking the study row serializes numbering within the study. The
            # maximum is read after the lock is held: a statement's snapshot
            # is taken when it starts, so it must not be part of the locking one.
            if not self._rows(
                f"SELECT id FROM {STUDY_TABLE} WHERE id = %s{self._for_update()}", [study_id]
            ):
                raise KeyError(f"No study with study_id {study_id} exists.")
            ((last,),) = self._rows(
                f"SELECT MAX(number) FROM {TRIAL_TABLE} WHERE study_id = %s", [study_id]
            )
            number = 0 if last is None else last + 1
            placeholders = ", ".join(["%s"] * len(columns))
            (trial_id,) = self._rows(
                f"INSERT INTO {TRIAL_TABLE} ({quote(columns)}) VALUES ({placeholders}) "
                "RETURNING id",
                [study_id, number, *values],
            )[0]
            self._execute(*self._summary_update(study_id, None, row["state"], row.get("value")))
        return trial_id

    def _encode(self, column: str, value: Any) -> Any:
        if column in JSON_COLUMNS:
            return None if value is None else json.dumps(value)
        if column.startswith("datetime") or column == "heartbeat":
            return self._adapt_datetime(value)
        return int(value) if column == "state" else value

    def _locked_trial(self, trial_id: int, *columns: str) -> tuple[Any, ...]:
        """Lock a trial's row and return (state, *columns); the trial must be updatable."""
        found = self._rows(
            f"SELECT {quote(['state', *columns])} FROM {TRIAL_TABLE} "
            f"WHERE id = %s{self._for_update()}",
            [trial_id],
        )
        if not found:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        state, *rest = found[0]
        self.check_trial_is_updatable(trial_id, TrialState(state))
        decoded = [
            json.loads(v) if c in JSON_COLUMNS else v for c, v in zip(columns, rest, strict=True)
        ]
        return (state, *decoded)

    def _register_distributions(self, study_id: int, distributions: dict[str, str]) -> None:
        """Check each distribution against the study's first one for that name; record new names."""
        known = self._param_distributions.setdefault(study_id, {})
        if all(name in known for name in distributions):
            for name, dist_json in distributions.items():
                if known[name] != dist_json:
                    check_distribution_compatibility(
                        parse_distribution(known[name]), parse_distribution(dist_json)
                    )
            return
        # A name this process has not seen: consult (and extend) the study's record.
        with write_transaction(self.using):
            recorded = self._study_column(study_id, "param_distributions", for_update=True)
            for name, dist_json in distributions.items():
                if name in recorded:
                    check_distribution_compatibility(
                        parse_distribution(recorded[name]), parse_distribution(dist_json)
                    )
            new = {n: d for n, d in distributions.items() if n not in recorded}
            if new:
                recorded.update(new)
                self._study_rows.filter(pk=study_id).update(param_distributions=recorded)
        known.update(recorded)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        dist_json = distribution_to_json(distribution)
        with write_transaction(self.using):
            _, params, dists, study_id = self._locked_trial(
                trial_id, "params", "distributions", "study_id"
            )
            self._register_distributions(study_id, {param_name: dist_json})
            params[param_name] = param_value_internal
            dists[param_name] = dist_json
            self._execute(
                f"UPDATE {TRIAL_TABLE} SET params = %s, distributions = %s WHERE id = %s",
                [json.dumps(params), json.dumps(dists), trial_id],
            )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with write_transaction(self.using):
            current, study_id, started = self._locked_trial(trial_id, "study_id", "datetime_start")
            if state == TrialState.RUNNING and current != TrialState.WAITING:
                return False
            now = timezone.now()
            update: dict[str, Any] = {"state": state}
            if values is not None:
                update["values"] = [float(v) for v in values]
                update["value"] = first_value(update["values"])
            if state == TrialState.RUNNING:
                update["datetime_start"] = now
            if state.is_finished():
                update["datetime_complete"] = now
                started = to_utc(started)
                update["elapsed"] = None if started is None else (now - started).total_seconds()
            assignments = ", ".join(f"{quote([name])} = %s" for name in update)
            (row,) = self._rows(
                f"UPDATE {TRIAL_TABLE} SET {assignments} WHERE id = %s RETURNING {TRIAL_COLUMNS}",
                [*(self._encode(k, v) for k, v in update.items()), trial_id],
            )
            if state != current:
                old = TrialState(current)
                self._execute(*self._summary_update(study_id, old, state, update.get("value")))
        if state.is_finished():
            self._remember_finished(frozen_trial(row))
        return True

    def _remember_finished(self, trial: FrozenTrial) -> None:
        # The trial is final: later reads of it in this process need no query.
        with self._lock:
            for cached in self._studies.values():
                position = cached.position.get(trial._trial_id)
                if position is not None:
                    cached.trials[position] = trial
                    cached.unfinished.pop(trial._trial_id, None)

    def _set_trial_json(self, trial_id: int, column: str, key: str, value: Any) -> None:
        with write_transaction(self.using):
            _, mapping = self._locked_trial(trial_id, column)
            mapping[key] = value
            self._execute(
                f"UPDATE {TRIAL_TABLE} SET {column} = %s WHERE id = %s",
                [json.dumps(mapping), trial_id],
            )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._set_trial_json(trial_id, "intermediate_values", str(step), float(intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_json(trial_id, "user_attrs", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_json(trial_id, "system_attrs", key, value)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        # A trial's number and id never change: a cached trial answers (a tell over
        # HTTP asks this twice). The cache is ordered by number, numbers are unique.
        with self._lock:
            cached = self._studies.get(study_id)
            if cached is not None and 0 <= trial_number < len(cached.trials):
                trial = cached.trials[trial_number]
                if trial.number == trial_number:
                    return trial._trial_id
        found = self._rows(
            f"SELECT id FROM {TRIAL_TABLE} WHERE study_id = %s AND number = %s",
            [study_id, trial_number],
        )
        if not found:
            raise KeyError(f"No trial with trial number {trial_number} in study {study_id}.")
        return found[0][0]

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        found = list(self._trial_rows.filter(pk=trial_id).values_list("params", flat=True)[:1])
        if not found:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return found[0][param_name]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            for cached in self._studies.values():
                position = cached.position.get(trial_id)
                if position is not None and trial_id not in cached.unfinished:
                    return cached.trials[position]
        found = self._rows(f"SELECT {TRIAL_COLUMNS} FROM {TRIAL_TABLE} WHERE id = %s", [trial_id])
        if not found:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return frozen_trial(found[0])

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        with self._lock:
            cached = self._studies.get(study_id)
            if cached is None:
                self._study_column(study_id, "id")  # KeyError for an unknown study
                cached = self._studies[study_id] = StudyTrials()
            # Only trials that are new, or were unfinished at the last read.
            condition, params = new_or_unfinished(cached.last_id, sorted(cached.unfinished))
            with gc_paused():
                rows = self._rows(
                    f"SELECT {TRIAL_COLUMNS} FROM {TRIAL_TABLE} "
                    f"WHERE study_id = %s AND ({condition}) ORDER BY number",
                    [study_id, *params],
                )
            cached.merge(rows)
            trials = cached.trials
            if states is not None:
                trials = [t for t in trials if t.state in states]
            else:
                trials = list(trials)
        if not deepcopy:
            return trials
        with gc_paused():
            return [copied(t) for t in trials]

    def get_trials_since(
        self, study_id: int, after: int, ids: list[int], limit: int
    ) -> tuple[list[FrozenTrial], bool]:
        """A remote client's read: new trials (``StudyTrials.since``) and those of ``ids``."""
        self.get_all_trials(study_id, deepcopy=False)  # up to date, or KeyError
        with self._lock:
            return self._studies[study_id].since(after, ids, limit)


@functools.cache
def get_storage() -> DjangoStorage:
    """The process's shared DjangoStorage, so its trial cache serves every request."""
    return DjangoStorage()
