from __future__ import annotations

from django.db import models

from studies.models.fields import JSONTextField


def default_directions() -> list[str]:
    return ["minimize"]


class CommandObjective(models.Model):
    """An objective that runs a program per trial, registered by staff in the admin.

    The program is started from ``argv`` (never through a shell) with ``{name}``
    placeholders replaced by the trial's parameters, which are also in its
    environment as ``HUB_PARAM_<NAME>``. It reports through its output, one
    statement per line: ``report <step> <value>`` for intermediate values and
    ``value <v>`` (or ``values <v1> <v2> ...``) for the result; see
    studies/objectives/command.py. Its search space bounds what any study may
    ask it to run (command_space.py); sandbox.py says what the program sees.
    """

    name = models.CharField(
        max_length=100,
        unique=True,
        help_text="Letters, digits, '_', '-' and '.'; studies name their objective by it.",
    )
    description = models.TextField(blank=True, default="")
    argv = JSONTextField(
        default=list, help_text='A JSON list, e.g. ["python3", "train.py", "--lr", "{lr}"].'
    )
    directions = JSONTextField(default=default_directions)
    search_space = JSONTextField(default=dict, blank=True)
    working_directory = models.CharField(max_length=500, blank=True, default="")
    environment = JSONTextField(default=dict, blank=True)
    pass_environment = JSONTextField(
        default=list,
        blank=True,
        help_text="Variables of the worker's environment the program also sees, beyond "
        'HUB_COMMAND_ENV_ALLOWLIST: a JSON list of NAME or PREFIX*, e.g. ["WANDB_API_KEY"].',
    )
    allow_unsafe_strings = models.BooleanField(
        default=False,
        help_text="Allow string choices that begin with '-' or are paths with '..' or absolute "
        "ones; studies still get only the choices registered here.",
    )
    timeout = models.FloatField(
        default=3600, help_text="Seconds a trial may run before it is killed."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
