"""HubStorage: an Optuna storage that is a study on an Optuna Hub, over HTTP(S)."""

from __future__ import annotations

import copy
import os
import threading
import uuid
from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import BaseStorage
from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from optuna_hub_client._http import Connection
from optuna_hub_client._wire import (
    directions_from_wire,
    directions_to_wire,
    study_from_wire,
    trial_from_wire,
    trial_to_wire,
)

StaleTrialCallback = Callable[["optuna.Study", FrozenTrial], None]

# Unfinished trials named in one read; with more, the read asks from the oldest.
MAX_UNFINISHED_IDS = 1000


class _StudyTrials:
    """One study's trials as this client last read them, ordered by number."""

    def __init__(self) -> None:
        self.trials: list[FrozenTrial] = []
        self.position: dict[int, int] = {}  # trial id -> index in trials
        self.unfinished: set[int] = set()
        self.last_id = 0

    def merge(self, trial: FrozenTrial) -> None:
        trial_id = trial._trial_id
        if trial_id in self.position:
            self.trials[self.position[trial_id]] = trial
        else:
            if self.trials and trial.number < self.trials[-1].number:
                self.trials.append(trial)
                self.trials.sort(key=lambda t: t.number)
                self.position = {t._trial_id: i for i, t in enumerate(self.trials)}
            else:
                self.position[trial_id] = len(self.trials)
                self.trials.append(trial)
            self.last_id = max(self.last_id, trial_id)
        if trial.state.is_finished():
            self.unfinished.discard(trial_id)
        else:
            self.unfinished.add(trial_id)


class HubStorage(BaseStorage, BaseHeartbeat):
    """The studies of an Optuna Hub as an Optuna storage.

    ``url`` and ``token`` default to ``OPTUNA_HUB_URL`` and ``OPTUNA_HUB_TOKEN``
    (the hub's API tokens page shows both). ``heartbeat_interval``,
    ``grace_period`` and ``failed_trial_callback`` work as for
    ``optuna.storages.RDBStorage``. Each call is one HTTP request on a
    kept-alive connection; a failed connection is retried ``retries`` times
    with exponential backoff from ``backoff`` seconds.

    Finished trials never change, so they are read once and kept; each read of
    a study's trials asks only for new trials and those unfinished at the
    previous read.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        failed_trial_callback: StaleTrialCallback | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        url = url or os.environ.get("OPTUNA_HUB_URL")
        token = token or os.environ.get("OPTUNA_HUB_TOKEN")
        if not url:
            raise ValueError("HubStorage needs the hub's URL: pass url= or set OPTUNA_HUB_URL.")
        if not token:
            raise ValueError(
                "HubStorage needs an API token: pass token= or set OPTUNA_HUB_TOKEN "
                "(the hub's API tokens page makes one)."
            )
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be a positive integer.")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("grace_period must be a positive integer.")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.failed_trial_callback = failed_trial_callback
        self._connection = Connection(url, token, timeout, retries, backoff)
        self._init_cache()

    def _init_cache(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[int, _StudyTrials] = {}
        self._finished: dict[int, FrozenTrial] = {}  # trial id -> trial, for get_trial
        self._directions: dict[int, list[StudyDirection]] = {}
        # The trial this thread just created, as the hub answered: Optuna reads
        # it right back, and no other call came in between.
        self._fresh = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_studies", "_finished", "_directions", "_fresh"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def __repr__(self) -> str:
        return f"HubStorage({self._connection.url!r})"

    def _call(self, method: str, idempotent: bool = False, **args: Any) -> Any:
        self._fresh.trial = None
        return self._connection.call(method, idempotent, **args)

    # Studies

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        if study_name is None:
            study_name = DEFAULT_STUDY_NAME_PREFIX + str(uuid.uuid4())
        return self._call(
            "create_new_study",
            idempotent=True,
            directions=directions_to_wire(list(directions)),
            study_name=study_name,
        )

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", study_id=study_id)
        with self._lock:
            cached = self._studies.pop(study_id, None)
            for trial_id in cached.position if cached else ():
                self._finished.pop(trial_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_user_attr", study_id=study_id, key=key, value=value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_system_attr", study_id=study_id, key=key, value=value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call("get_study_id_from_name", study_name=study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call("get_study_name_from_id", study_id=study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        # A study's directions never change: read them once.
        if study_id not in self._directions:
            names = self._call("get_study_directions", study_id=study_id)
            self._directions[study_id] = directions_from_wire(names)
        return list(self._directions[study_id])

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_user_attrs", study_id=study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_system_attrs", study_id=study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return [study_from_wire(s) for s in self._call("get_all_studies")]

    # Trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        template = None if template_trial is None else trial_to_wire(template_trial)
        data = self._call(
            "create_new_trial", idempotent=True, study_id=study_id, template_trial=template
        )
        trial = trial_from_wire(data)
        self._fresh.trial = trial
        return trial._trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._call(
            "set_trial_param",
            trial_id=trial_id,
            param_name=param_name,
            param_value_internal=param_value_internal,
            distribution=distribution_to_json(distribution),
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        data = self._call(
            "set_trial_state_values",
            idempotent=True,
            trial_id=trial_id,
            state=state.name,
            values=None if values is None else [float(v) for v in values],
        )
        if data["updated"] and state.is_finished():
            trial = trial_from_wire(data["trial"])
            with self._lock:
                self._finished[trial_id] = trial
        return data["updated"]

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._call(
            "set_trial_intermediate_value",
            trial_id=trial_id,
            step=step,
            intermediate_value=float(intermediate_value),
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_user_attr", trial_id=trial_id, key=key, value=value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_system_attr", trial_id=trial_id, key=key, value=value)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            cached = self._studies.get(study_id)
            if cached is not None and 0 <= trial_number < len(cached.trials):
                trial = cached.trials[trial_number]
                if trial.number == trial_number:
                    return trial._trial_id
        return self._call(
            "get_trial_id_from_study_id_trial_number",
            study_id=study_id,
            trial_number=trial_number,
        )

    def get_trial(self, trial_id: int) -> FrozenTrial:
        fresh = getattr(self._fresh, "trial", None)
        if fresh is not None and fresh._trial_id == trial_id:
            return fresh
        with self._lock:
            trial = self._finished.get(trial_id)
        if trial is not None:
            return trial
        trial = trial_from_wire(self._call("get_trial", trial_id=trial_id))
        if trial.state.is_finished():
            with self._lock:
                self._finished[trial_id] = trial
        return trial

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        with self._lock:
            cached = self._studies.setdefault(study_id, _StudyTrials())
            self._read_new_trials(study_id, cached)
            trials = cached.trials
            if states is not None:
                trials = [t for t in trials if t.state in states]
            else:
                trials = list(trials)
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_new_trials(self, study_id: int, cached: _StudyTrials) -> None:
        """Bring ``cached`` up to date: read trials that are new or were unfinished."""
        after, unfinished = cached.last_id, sorted(cached.unfinished)
        if len(unfinished) > MAX_UNFINISHED_IDS:
            after, unfinished = unfinished[0] - 1, []
        more = True
        while more:
            try:
                data = self._call("get_trials", study_id=study_id, after=after, ids=unfinished)
            except KeyError:
                self._studies.pop(study_id, None)
                raise
            for wire in data["trials"]:
                trial = trial_from_wire(wire)
                cached.merge(trial)
                if trial.state.is_finished():
                    self._finished[trial._trial_id] = trial
            more, after, unfinished = data["more"], max(after, cached.last_id), []

    # Heartbeats

    def record_heartbeat(self, trial_id: int) -> None:
        self._call("record_heartbeat", trial_id=trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        return self._call("get_stale_trial_ids", study_id=study_id, grace_period=grace)

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        return self.failed_trial_callback
