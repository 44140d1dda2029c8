"""One study's trials as a process last read them: finished ones never change."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from studies.storage.codec import frozen_trial, gc_paused


class StudyTrials:
    """One study's trials as this process last read them, ordered by number."""

    def __init__(self) -> None:
        self.trials: list[FrozenTrial] = []
        self.position: dict[int, int] = {}  # trial_id -> index in self.trials
        self.unfinished: dict[int, tuple[Any, ...]] = {}  # trial_id -> its row as last read
        self.last_id = 0

    def merge(self, raw_rows: list[tuple[Any, ...]]) -> None:
        """Take in rows as read; an unfinished trial whose row is unchanged is kept as is."""
        out_of_order = False
        with gc_paused():
            for raw in raw_rows:
                trial_id = raw[0]
                if self.unfinished.get(trial_id) == raw:
                    continue  # a running trial nothing was written to since
                trial = frozen_trial(raw)
                if trial_id in self.position:
                    self.trials[self.position[trial_id]] = trial
                else:
                    out_of_order |= bool(self.trials) and trial.number < self.trials[-1].number
                    self.position[trial_id] = len(self.trials)
                    self.trials.append(trial)
                    self.last_id = max(self.last_id, trial_id)
                if trial.state.is_finished():
                    self.unfinished.pop(trial_id, None)
                else:
                    self.unfinished[trial_id] = raw
        if out_of_order:
            self.trials.sort(key=lambda t: t.number)
            self.position = {t._trial_id: i for i, t in enumerate(self.trials)}

    def since(self, after: int, ids: list[int], limit: int) -> tuple[list[FrozenTrial], bool]:
        """Trials with an id above ``after`` (the first ``limit``), and those of ``ids``.

        Also whether more than ``limit`` are new. A study's trial ids grow with
        their numbers (each is inserted under the study's lock), so the new ones
        are at the end.
        """
        new = []
        for trial in reversed(self.trials):
            if trial._trial_id <= after:
                break
            new.append(trial)
        new.reverse()
        known = [self.trials[self.position[i]] for i in ids if i <= after and i in self.position]
        return known + new[:limit], len(new) > limit
