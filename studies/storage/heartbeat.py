"""Optuna's trial heartbeats on the trial rows (``Trial.heartbeat``), as RDBStorage keeps them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import optuna
from django.db import connections
from django.utils import timezone
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

StaleTrialCallback = Callable[["optuna.Study", FrozenTrial], None]


class RowHeartbeat(BaseHeartbeat):
    """The heartbeat half of DjangoStorage (``heartbeat_interval``, ``grace_period``,
    ``heartbeat_stale_trial_callback``, ``using`` and ``_trial_rows`` are its own)."""

    heartbeat_interval: int | None
    grace_period: int | None
    heartbeat_stale_trial_callback: StaleTrialCallback | None
    using: str
    _trial_rows: Any

    def record_heartbeat(self, trial_id: int) -> None:
        self._trial_rows.filter(pk=trial_id).update(heartbeat=timezone.now())
        if threading.current_thread() is not threading.main_thread():
            # Optuna beats from a short-lived thread per trial: don't leave one
            # database connection behind for every trial.
            connections[self.using].close()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        return list(
            self._trial_rows.filter(
                study_id=study_id,
                state=TrialState.RUNNING,
                heartbeat__lt=timezone.now() - timedelta(seconds=grace),
            ).values_list("id", flat=True)
        )

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        return self.heartbeat_stale_trial_callback
