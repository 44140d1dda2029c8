"""The rows behind every Optuna study in the hub.

Optuna owns the trial data (written through studies.storage.DjangoStorage); the
hub adds what a shared service needs around it: an owner, the sampler and pruner
configuration, a declared search space, the objective the workers run, and the
jobs that run it.

A trial is one row. Params, distributions, intermediate values and attributes
are JSON text columns rather than child tables: one query reads a trial whole,
the text keeps key order (PostgreSQL's jsonb does not) and Python's JSON keeps
inf, -inf and nan exactly.

Models import nothing of the hub above them (storage, jobs, objectives, views):
logic that needs those lives in its package, or in studies/actions.py.
"""

from studies.models.audit import AuditEntry
from studies.models.command import CommandObjective, default_directions
from studies.models.fields import JSONTextField, first_value, json_safe, parse_distribution
from studies.models.job import Job, JobQuerySet, JobSlot, JobTrial
from studies.models.remote import RemoteCall
from studies.models.study import Study, StudyQuerySet
from studies.models.team import Membership, Team
from studies.models.token import ApiToken, ApiTokenQuerySet
from studies.models.trial import TRIAL_ROW_FIELDS, Trial, TrialQuerySet

__all__ = [
    "TRIAL_ROW_FIELDS",
    "ApiToken",
    "ApiTokenQuerySet",
    "AuditEntry",
    "CommandObjective",
    "JSONTextField",
    "Job",
    "JobQuerySet",
    "JobSlot",
    "JobTrial",
    "Membership",
    "RemoteCall",
    "Study",
    "StudyQuerySet",
    "Team",
    "Trial",
    "TrialQuerySet",
    "default_directions",
    "first_value",
    "json_safe",
    "parse_distribution",
]
