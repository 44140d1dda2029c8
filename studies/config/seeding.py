"""Seeded samplers that give the same trial the same draws in every process.

A seeded Optuna sampler is one random stream per process. Several web workers
(or job slots) each holding the study's sampler would replay that stream and
ask the same parameters twice. ``TrialSeededSampler`` instead reseeds the
study's sampler before each trial from the study's seed and the trial's
number: asks are distinct, and trial k samples the same values whichever
process serves it (given the same finished trials before it).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int, salt: int = 0) -> int:
    """A well-mixed 32-bit seed for trial ``number`` of a study seeded with ``seed``."""
    entropy = [seed, number, salt] if salt else [seed, number]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def reseed(sampler: BaseSampler, seed: int) -> None:
    """Seed every random state of ``sampler`` (and of the samplers it holds) with ``seed``.

    Optuna's own ``reseed_rng`` draws fresh random seeds; this is the same walk
    with a given one. Rebuilding the sampler instead would cost a few ms a trial.
    """
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, LazyRandomState):
            obj.rng.seed(seed)
            return
        if isinstance(obj, np.random.RandomState):
            obj.seed(seed)
            return
        if type(obj).__module__.startswith("optuna.") and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                walk(value, depth + 1)

    walk(sampler, 0)


class TrialSeededSampler(BaseSampler):
    """Delegates to ``sampler``, reseeded from (seed, trial number) before each trial."""

    def __init__(self, sampler: BaseSampler, seed: int) -> None:
        self._sampler = sampler
        self._seed = seed
        self._salt = 0

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        reseed(self._sampler, trial_seed(self._seed, trial.number, self._salt))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # A job's memory-mode slots number their trials alike (each on its own
        # InMemoryStorage) and reseed to differ: they give up reproducibility.
        self._salt = secrets.randbits(31) + 1


def seeded_per_trial(sampler_type: str) -> bool:
    """Whether a seeded sampler of this type is reseeded per trial.

    QMC's draws already follow the trial count (its seed only scrambles the
    sequence), so one instance gives the same points in every process.
    """
    return sampler_type != "qmc"
