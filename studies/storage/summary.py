"""What DjangoStorage answers without reading every trial.

The trial summary on a study's row (Study.n_*, best_value, last_activity):
DjangoStorage keeps it in the transaction that adds a trial or changes its
state, so lists, counts and the charts' cache version never read the trials.
The changes are increments in one UPDATE, so concurrent writers add up.

Optuna's ``get_n_trials`` and ``get_best_trial`` read every trial by default;
here each is one query on the (study, state, value, number) index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from studies.storage.codec import STUDY_TABLE, TRIAL_TABLE


def summary_update(
    study_id: int,
    old: TrialState | None,
    new: TrialState,
    value: float | None,
    directions: list[StudyDirection],
    now: Any,
) -> tuple[str, list[Any]]:
    """The UPDATE of the study's row, and its parameters, for a trial that is
    added (``old`` None) or goes from ``old`` to ``new`` with first value
    ``value``, at ``now`` (a database value)."""
    assignments = ["last_activity = %s", f"n_{new.name.lower()} = n_{new.name.lower()} + 1"]
    params: list[Any] = [now]
    if old is None:
        assignments.append("n_trials = n_trials + 1")
    else:
        assignments.append(f"n_{old.name.lower()} = n_{old.name.lower()} - 1")
    if new == TrialState.COMPLETE and value is not None and len(directions) == 1:
        better = ">" if directions[0] == StudyDirection.MAXIMIZE else "<"
        assignments.append(
            f"best_value = CASE WHEN best_value IS NULL OR %s {better} best_value "
            "THEN %s ELSE best_value END"
        )
        params += [value, value]
    sql = f"UPDATE {STUDY_TABLE} SET {', '.join(assignments)} WHERE id = %s"
    return sql, [*params, study_id]


class SummaryReads:
    """``get_n_trials`` and ``get_best_trial`` of DjangoStorage, from the index."""

    _rows: Callable[..., list[tuple[Any, ...]]]
    _study_column: Callable[..., Any]
    get_study_directions: Callable[[int], list[StudyDirection]]
    get_trial: Callable[[int], FrozenTrial]

    def get_n_trials(
        self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
    ) -> int:
        # One count on the (study, state) index instead of decoding every trial.
        states = [state] if isinstance(state, TrialState) else state
        sql = f"SELECT COUNT(*) FROM {TRIAL_TABLE} WHERE study_id = %s"
        params: list[Any] = [study_id]
        if states is not None:
            # No states counts nothing (PostgreSQL takes no empty IN list).
            sql += f" AND state IN ({', '.join(['%s'] * len(states))})" if states else " AND 1 = 0"
            params += [int(s) for s in states]
        ((count,),) = self._rows(sql, params)
        if not count:
            self._study_column(study_id, "id")  # KeyError for an unknown study
        return count

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        # As Optuna's: the first of the complete trials with the best value, found
        # with one query on the (study, state, value) index instead of reading all.
        directions = self.get_study_directions(study_id)
        if len(directions) > 1:
            raise RuntimeError("Best trial can be obtained only for single-objective optimization.")
        order = "DESC" if directions[0] == StudyDirection.MAXIMIZE else "ASC"
        found = self._rows(
            f"SELECT id FROM {TRIAL_TABLE} WHERE study_id = %s AND state = %s "
            f"AND value IS NOT NULL ORDER BY value {order}, number LIMIT 1",
            [study_id, int(TrialState.COMPLETE)],
        )
        if not found:
            raise ValueError("No trials are completed yet.")
        return self.get_trial(found[0][0])
