"""A study's trials as the charts read them: NumPy columns, kept per study.

Charts never decode whole trials. One query reads the columns they draw (ids,
numbers, states, values, the stored internal params, times as POSIX seconds);
a refresh reads only the trials that are new or were unfinished at the
previous read, as the storage's cache does. So a study of 100 000 trials is
read once per process, and what a process keeps of it is a few arrays (about
6 MB), not 100 000 FrozenTrials. Intermediate values, the largest column, are
read only by their own chart (``read_curves``), whose JSON is cached.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection
from optuna.trial import TrialState

from studies.charts.base import TrialData, param_names
from studies.models import Study, parse_distribution
from studies.storage.codec import TRIAL_TABLE, gc_paused, loads_numbers, new_or_unfinished

UNFINISHED = [TrialState.RUNNING.value, TrialState.WAITING.value]


def _posix(column: str) -> str:
    """SQL for a datetime column as POSIX seconds (NULL stays NULL)."""
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM {column})"
    return f"(julianday({column}) - 2440587.5) * 86400.0"  # stored as UTC text


def _read(study_id: int, after_id: int, unfinished: list[int]) -> list[tuple[Any, ...]]:
    """Rows of the study's trials with an id above ``after_id`` or in ``unfinished``."""
    condition, params = new_or_unfinished(after_id, unfinished)
    sql = (
        'SELECT id, number, state, "value", "values", params, '
        f"{_posix('datetime_start')}, {_posix('datetime_complete')} FROM {TRIAL_TABLE} "
        f"WHERE study_id = %s AND ({condition}) ORDER BY number"
    )
    with gc_paused(), connection.cursor() as cursor:
        cursor.execute(sql, [study_id, *params])
        return cursor.fetchall()


def _columns(study: Study, rows: list[tuple[Any, ...]]) -> TrialData:
    """The rows as columns, for the study's parameters as they are now."""
    k = max(len(study.directions), 1)
    names = param_names(study)
    with gc_paused():
        columns = list(zip(*rows, strict=True)) if rows else [()] * 8
        if k == 1:
            values = [[math.nan if v is None else v] for v in columns[3]]
        else:
            decoded = [None if v is None else loads_numbers(v) for v in columns[4]]
            values = [v if v and len(v) == k else [math.nan] * k for v in decoded]
        stored = [loads_numbers(p) for p in columns[5]]
        params = {n: np.array([p.get(n, math.nan) for p in stored], float) for n in names}
    return TrialData(
        directions=list(study.directions) or ["minimize"],
        ids=np.array(columns[0], np.int64),
        numbers=np.array(columns[1], np.int64),
        states=np.array(columns[2], np.int8),
        values=np.array(values, float).reshape(len(rows), k),
        params=params,
        distributions={n: parse_distribution(study.param_distributions[n]) for n in names},
        start=np.array(columns[6], float),
        complete=np.array(columns[7], float),
    )


def _merged(old: TrialData, new: TrialData) -> TrialData:
    """``old`` with the trials of ``new`` added or replaced, ordered by number."""
    keep = ~np.isin(old.ids, new.ids)
    order = np.argsort(np.concatenate([old.numbers[keep], new.numbers]), kind="stable")

    def joined(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a[keep], b])[order]

    empty = np.full(len(old.ids), np.nan)
    return TrialData(
        directions=new.directions,
        ids=joined(old.ids, new.ids),
        numbers=joined(old.numbers, new.numbers),
        states=joined(old.states, new.states),
        values=joined(old.values, new.values),
        # A parameter new to the study is absent from the trials read before it.
        params={n: joined(old.params.get(n, empty), c) for n, c in new.params.items()},
        distributions=new.distributions,
        start=joined(old.start, new.start),
        complete=joined(old.complete, new.complete),
    )


@dataclass
class Curves:
    """Every reported intermediate value of a study: trial numbers, steps and values,
    ordered by trial number, then step."""

    numbers: np.ndarray
    steps: np.ndarray
    values: np.ndarray


def read_curves(study_id: int) -> Curves:
    """The study's intermediate values; only the chart of them reads this column."""
    with gc_paused(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT number, intermediate_values FROM {TRIAL_TABLE} "
            "WHERE study_id = %s AND intermediate_values <> '{}' ORDER BY number",
            [study_id],
        )
        numbers: list[int] = []
        steps: list[int] = []
        values: list[float] = []
        for number, text in cursor.fetchall():
            reported = loads_numbers(text)
            numbers.extend([number] * len(reported))
            steps.extend(map(int, reported))
            values.extend(reported.values())
    curves = Curves(np.array(numbers, np.int64), np.array(steps, float), np.array(values, float))
    # As reported, unless a trial reported a step before an earlier one.
    if np.any((np.diff(curves.numbers) == 0) & (np.diff(curves.steps) < 0)):
        order = np.lexsort((curves.steps, curves.numbers))
        curves = Curves(curves.numbers[order], curves.steps[order], curves.values[order])
    return curves


@dataclass
class _Entry:
    signature: str
    data: TrialData


class TrialDataCache:
    """The latest TrialData of the last few studies charted; each refresh reads
    only trials that are new or were unfinished when it was last read."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[int, _Entry] = OrderedDict()

    def get(self, study: Study, signature: str) -> TrialData:
        with self.lock:
            entry = self.entries.get(study.pk)
            if entry is not None:
                self.entries.move_to_end(study.pk)
                if entry.signature == signature:
                    return entry.data
        if entry is None:
            data = _columns(study, _read(study.pk, 0, []))
        else:
            old = entry.data
            unfinished = old.ids[np.isin(old.states, UNFINISHED)].tolist()
            last_id = int(old.ids.max()) if len(old.ids) else 0
            data = _merged(old, _columns(study, _read(study.pk, last_id, unfinished)))
        with self.lock:
            self.entries[study.pk] = _Entry(signature, data)
            self.entries.move_to_end(study.pk)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return data


trial_data_cache = TrialDataCache()
