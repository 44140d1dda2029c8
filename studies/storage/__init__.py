"""The Optuna storage over the hub's models, and the optuna.Study for a hub study.

- ``django_storage.py``: ``DjangoStorage`` (``BaseStorage`` + ``BaseHeartbeat``) and
  the process's shared instance, ``get_storage()``;
- ``codec.py``: trial rows to ``FrozenTrial`` and back;
- ``cache.py``: a study's trials as the process last read them;
- ``sqlite.py``: SQLite writers queue for the write lock.
"""

from __future__ import annotations

from typing import Any

import optuna

from studies.config.samplers import build_pruner, build_sampler
from studies.config.search_space import SearchSpace
from studies.config.seeding import TrialSeededSampler, seeded_per_trial
from studies.models import Study
from studies.storage.django_storage import DjangoStorage, get_storage

__all__ = ["DjangoStorage", "get_storage", "optuna_study_for"]


def optuna_study_for(
    study: Study, storage: Any = None, search_space: SearchSpace | None = None
) -> optuna.Study:
    """``study`` as an optuna.Study with its sampler and pruner, on ``storage``.

    ``search_space`` is the space its trials sample when that is not the declared
    one (a job's objective brings its own); grid samplers are built from it. A
    seeded sampler is seeded per trial (studies/config/seeding.py), so every
    process asks the same trial the same values.
    """
    space = search_space or study.search_space
    config = study.sampler or {}
    seed = config.get("seed")
    if seed is not None and seeded_per_trial(config.get("type", "tpe")):
        sampler: Any = TrialSeededSampler(build_sampler(config, space), seed)
    else:
        sampler = build_sampler(config, space)
    return optuna.Study(
        study_name=study.name,
        storage=storage or get_storage(),
        sampler=sampler,
        pruner=build_pruner(study.pruner),
    )
