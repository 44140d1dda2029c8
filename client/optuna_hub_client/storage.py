"""HubStorage: an Optuna storage that is a study on an Optuna Hub, over HTTP(S)."""

from __future__ import annotations

import atexit
import copy
import json
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
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

_logger = optuna.logging.get_logger(__name__)

StaleTrialCallback = Callable[["optuna.Study", FrozenTrial], None]

# Unfinished trials named in one read; with more, the read asks from the oldest.
MAX_UNFINISHED_IDS = 1000
# Writes held back for the next call; one more is sent at once, with them.
MAX_PENDING = 100


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
            if trial_id not in self.unfinished and not trial.state.is_finished():
                return  # an answer older than what another thread read: keep the final state
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

    A trial this client runs is kept here too, so reading it back needs no
    request, and its parameters, attributes and reports travel with the next
    request rather than alone (within ``flush_after`` seconds in any case, and
    at exit; 0 sends each at once). A write the client cannot check itself (to
    a trial it does not run, of a distribution it has not seen, of a value the
    hub may refuse) is sent at once.

    A new trial's and a finished trial's answers bring the study's trials up
    to date as well. A read of the study within ``read_ahead`` seconds of such
    an answer (or of a read), with no other request of this process in
    between, uses it: it sees every write of this process, and those of other
    processes as of that answer (0 always asks the hub). So an Optuna trial,
    which makes ten storage calls, takes two requests.
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
        flush_after: float = 0.5,
        read_ahead: float = 0.1,
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
        if not flush_after >= 0:
            raise ValueError("flush_after must be a number of seconds, 0 or more.")
        if not read_ahead >= 0:
            raise ValueError("read_ahead must be a number of seconds, 0 or more.")
        self._flush_after = flush_after
        self._read_ahead = read_ahead
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.failed_trial_callback = failed_trial_callback
        self._connection = Connection(url, token, timeout, retries, backoff)
        self._init_cache()
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _init_cache(self) -> None:
        # Locks are taken in this order: _read_lock, _send_lock, _lock.
        self._read_lock = threading.Lock()  # one read of trials at a time
        self._send_lock = threading.Lock()  # held while a request carries pending writes
        self._lock = threading.RLock()  # the caches below
        self._studies: dict[int, _StudyTrials] = {}
        self._finished: dict[int, FrozenTrial] = {}  # trial id -> trial, for get_trial
        self._own: dict[int, tuple[int, FrozenTrial]] = {}  # running here: id -> (study, trial)
        self._pending: list[list[Any]] = []  # [method, args] to send with the next call
        self._sent = 0  # how many times pending writes were taken to be sent
        self._directions: dict[int, list[StudyDirection]] = {}
        # Per study, each parameter's first distribution as the hub has it.
        self._distributions: dict[int, dict[str, BaseDistribution]] = {}
        # The study the last answer brought up to date, and when it came.
        self._synced: tuple[int, float] | None = None
        self._started = 0  # requests started
        self._in_flight = 0  # requests not answered yet

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        state = self.__dict__.copy()
        for name in self._cache_names:
            del state[name]
        return state

    _cache_names = (
        "_read_lock",
        "_send_lock",
        "_lock",
        "_studies",
        "_finished",
        "_own",
        "_pending",
        "_sent",
        "_directions",
        "_distributions",
        "_synced",
        "_started",
        "_in_flight",
    )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()
        atexit.register(_flush_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        return f"HubStorage({self._connection.url!r})"

    def _call(self, method: str, idempotent: bool = False, **args: Any) -> Any:
        return self._request(method, args, idempotent)["result"]

    def _request(
        self,
        method: str,
        args: dict[str, Any],
        idempotent: bool = False,
        sync: int | None = None,
        reads: int | None = None,
    ) -> dict[str, Any]:
        """Send a call with the writes held back.

        With ``sync``, the answer brings that study's trials up to date too; with
        ``reads``, the call's result is a page of that study's trials.
        """
        # Held while pending writes travel, so no later call can overtake them.
        self._send_lock.acquire()
        with self._lock:
            self._synced = None
            self._started += 1
            started, alone = self._started, self._in_flight == 0
            self._in_flight += 1
            pending, self._pending = self._pending, []
            self._sent += bool(pending)
            cached = self._studies.get(sync if reads is None else reads)
            if sync is not None and cached is not None:
                if len(cached.unfinished) <= MAX_UNFINISHED_IDS:
                    after, ids = cached.last_id, sorted(cached.unfinished)
                    args = {**args, "_sync": {"study_id": sync, "after": after, "ids": ids}}
                else:
                    cached = None
        if pending:
            args = {**args, "_pending": pending}
        else:
            self._send_lock.release()
        try:
            answer = self._connection.request(method, args, idempotent)
        except Exception:
            with self._lock:  # the hub may not hold what this client thinks it does
                for _, written in pending:
                    self._own.pop(written["trial_id"], None)
                self._own.pop(args.get("trial_id", -1), None)
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
            if pending:
                self._send_lock.release()
        page = answer["result"] if reads is not None else answer.get("trials")
        if cached is not None and page is not None:
            study_id = sync if reads is None else reads
            with self._lock:
                self._merge(study_id, cached, page["trials"])
                # Up to date, if no other request of this process could have changed it since.
                if not page["more"] and alone and self._started == started:
                    self._synced = (study_id, time.monotonic())
        return answer

    def flush(self) -> None:
        """Send the writes held back for the next request now, with a call that changes nothing."""
        with self._lock:
            if not self._pending:
                return
            trial_id = self._pending[-1][1]["trial_id"]
        self._call("get_trial", trial_id=trial_id)

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
            self._distributions.pop(study_id, None)
            for trial_id in [t for t, (sid, _) in self._own.items() if sid == study_id]:
                del self._own[trial_id]

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
        answer = self._request(
            "create_new_trial",
            {"study_id": study_id, "template_trial": template},
            idempotent=True,
            sync=study_id,
        )
        trial = trial_from_wire(answer["result"])
        self._keep(study_id, trial)
        return trial._trial_id

    def _keep(self, study_id: int, trial: FrozenTrial) -> None:
        """Keep a trial the hub answered with: a running one is this client's to write."""
        with self._lock:
            if trial.state.is_finished():
                self._finished[trial._trial_id] = trial
                self._own.pop(trial._trial_id, None)
            elif trial.state == TrialState.RUNNING:
                self._set_own(study_id, trial)

    def _set_own(self, study_id: int, trial: FrozenTrial) -> None:
        # The study's list shows the same trial, with what this client wrote to it.
        self._own[trial._trial_id] = (study_id, trial)
        cached = self._studies.get(study_id)
        if cached is not None and trial._trial_id in cached.position:
            cached.trials[cached.position[trial._trial_id]] = trial

    def _write(
        self,
        method: str,
        args: dict[str, Any],
        change: Callable[[FrozenTrial], FrozenTrial],
        holds: Callable[[int], bool] = lambda study_id: True,
    ) -> None:
        """Hold a write to a trial running here for the next request; send any other at once.

        ``change`` gives the trial with the write applied (a copy: others may be
        reading the one kept); ``holds(study_id)`` says whether the client knows
        the hub will take it.
        """
        trial_id = args["trial_id"]
        with self._lock:
            entry = self._own.get(trial_id)
            if (
                entry is not None
                and self._flush_after > 0
                and len(self._pending) < MAX_PENDING
                and holds(entry[0])
            ):
                self._set_own(entry[0], change(entry[1]))
                self._pending.append([method, args])
                if len(self._pending) == 1:
                    timer = threading.Timer(self._flush_after, self._flush_late, [self._sent])
                    timer.daemon = True
                    timer.start()
                return
        self._call(method, **args)
        with self._lock:
            entry = self._own.get(trial_id)
            if entry is not None:
                self._set_own(entry[0], change(entry[1]))

    def _flush_late(self, sent: int) -> None:
        # Only if the writes this timer was started for were not sent since.
        if self._sent == sent:
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as e:  # a timer's thread: nobody to raise it to
            _logger.warning(f"HubStorage: writes held back for the hub were not stored: {e}")

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        value = param_value_internal

        def holds(study_id: int) -> bool:
            # A value the hub keeps, of a distribution compatible with the study's
            # first for the name; else the hub says why not, as Optuna's storages do.
            if not math.isfinite(value):
                return False
            if isinstance(distribution, CategoricalDistribution):
                if value != int(value) or not 0 <= value < len(distribution.choices):
                    return False
            known = self._distributions.get(study_id, {}).get(param_name)
            if known is None:
                return False
            try:
                check_distribution_compatibility(known, distribution)
            except ValueError:
                return False
            return True

        def change(trial: FrozenTrial) -> FrozenTrial:
            changed = copy.copy(trial)
            changed.params = {**trial.params, param_name: distribution.to_external_repr(value)}
            changed.distributions = {**trial.distributions, param_name: distribution}
            return changed

        args = {
            "trial_id": trial_id,
            "param_name": param_name,
            "param_value_internal": param_value_internal,
            "distribution": distribution_to_json(distribution),
        }
        self._write("set_trial_param", args, change, holds)
        with self._lock:
            study_id = self._study_of(trial_id)
            if study_id is not None:  # the hub took it: later ones must be compatible
                self._distributions.setdefault(study_id, {}).setdefault(param_name, distribution)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            study_id = self._study_of(trial_id)
        args = {
            "trial_id": trial_id,
            "state": state.name,
            "values": None if values is None else [float(v) for v in values],
        }
        data = self._request("set_trial_state_values", args, idempotent=True, sync=study_id)
        result = data["result"]
        if result["updated"] and study_id is not None:
            self._keep(study_id, trial_from_wire(result["trial"]))
        return result["updated"]

    def _study_of(self, trial_id: int) -> int | None:
        entry = self._own.get(trial_id)
        if entry is not None:
            return entry[0]
        return next((sid for sid, c in self._studies.items() if trial_id in c.position), None)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        value = float(intermediate_value)

        def change(trial: FrozenTrial) -> FrozenTrial:
            changed = copy.copy(trial)
            changed.intermediate_values = {**trial.intermediate_values, step: value}
            return changed

        args = {"trial_id": trial_id, "step": step, "intermediate_value": value}
        self._write("set_trial_intermediate_value", args, change)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write_attr("user_attrs", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write_attr("system_attrs", trial_id, key, value)

    def _write_attr(self, attrs: str, trial_id: int, key: str, value: Any) -> None:
        stored = json.loads(json.dumps(value))  # as the hub keeps it: tuples become lists

        def change(trial: FrozenTrial) -> FrozenTrial:
            changed = copy.copy(trial)
            setattr(changed, attrs, {**getattr(trial, attrs), key: stored})
            return changed

        args = {"trial_id": trial_id, "key": key, "value": value}
        self._write(f"set_trial_{attrs[:-1]}", args, change)

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
        with self._lock:
            entry = self._own.get(trial_id)
            if entry is not None:
                return copy.deepcopy(entry[1])
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
        synced = self._synced
        if (
            synced is None
            or synced[0] != study_id
            or time.monotonic() - synced[1] > self._read_ahead
            or study_id not in self._studies
        ):
            with self._read_lock:
                self._read_new_trials(study_id)
        with self._lock:
            trials = self._studies[study_id].trials
            if states is not None:
                trials = [t for t in trials if t.state in states]
            else:
                trials = list(trials)
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_new_trials(self, study_id: int) -> None:
        """Bring the study's trials up to date: read those that are new or were unfinished."""
        with self._lock:
            cached = self._studies.setdefault(study_id, _StudyTrials())
            after, unfinished = cached.last_id, sorted(cached.unfinished)
        if len(unfinished) > MAX_UNFINISHED_IDS:
            after, unfinished = unfinished[0] - 1, []
        more = True
        while more:
            args = {"study_id": study_id, "after": after, "ids": unfinished}
            try:
                page = self._request("get_trials", args, reads=study_id)["result"]
            except KeyError:
                with self._lock:
                    self._studies.pop(study_id, None)
                raise
            with self._lock:
                more, after, unfinished = page["more"], max(after, cached.last_id), []

    def _merge(self, study_id: int, cached: _StudyTrials, wires: list[dict[str, Any]]) -> None:
        known = self._distributions.setdefault(study_id, {})
        for wire in wires:
            trial = trial_from_wire(wire)
            for name, distribution in trial.distributions.items():
                known.setdefault(name, distribution)
            own = self._own.get(trial._trial_id)
            if trial.state.is_finished():
                self._finished[trial._trial_id] = trial
                self._own.pop(trial._trial_id, None)
            elif own is not None:
                trial = own[1]  # holds what this client wrote and the hub may not have yet
            cached.merge(trial)

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


def _flush_at_exit(ref: weakref.ref[HubStorage]) -> None:
    storage = ref()
    if storage is not None:
        storage._flush_quietly()
