"""Command objectives: a program run once per trial, registered by staff in the admin.

The program starts from an argv list (never through a shell). In each element
``{name}`` becomes the value of parameter ``name`` (``{{`` and ``}}`` are literal
braces); an element that names a parameter inactive in this trial is left out,
so write conditional parameters as ``--name={name}``. Every parameter is also in
the environment as ``HUB_PARAM_<NAME>`` (upper case, other characters as ``_``),
all of them as JSON in ``HUB_PARAMS``, with ``HUB_STUDY``, ``HUB_TRIAL_NUMBER``
and ``HUB_JOB_ID``.

The program talks back on its standard output, one statement per line; other
lines are kept in the output tail and otherwise ignored:

    report <step> <value>     an intermediate value (integer step), for the pruner
    value <v>                 the result (single-objective studies)
    values <v1> <v2> ...      the results, one per direction

The last ``value``/``values`` line counts. The trial fails when the program
exits non-zero, prints no result, or runs past the timeout (it is killed); it is
pruned (and killed) when the pruner says so after a report. The last lines of
output are kept in the trial's system attribute ``hub_output_tail``.

The program runs in its own process group, which is killed as a whole, also
when the worker itself dies, even by SIGKILL: on Linux the group is led by a
small guard process, started before the program, that the kernel tells when the
worker goes (PR_SET_PDEATHSIG) and that then kills its group. Elsewhere the
program loses its output pipe and stops at its next line of output (SIGPIPE).

What the program may receive and use is bounded: a study's space must fit
inside the registered one and each trial's values are checked against it
(command_space.py); the program sees an allowlisted environment, runs with
resource limits, optionally as an unprivileged user, in a directory of its own
(sandbox.py).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from django.conf import settings

from studies.config.errors import ConfigError
from studies.config.search_space import SearchSpace, validate_search_space
from studies.objectives.base import ObjectiveInfo, RunContext
from studies.objectives.command_space import check_fits, check_registered_strings, check_values
from studies.objectives.sandbox import (
    START_FAILED,
    CommandError,
    check_pass_environment,
    command_account,
    launch_argv,
    program_env,
    protect_hub_files,
    work_directory,
)

if TYPE_CHECKING:
    from studies.models import CommandObjective

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TAIL_LINES = 50
TAIL_CHARS = 8000
LINE_CHARS = 1000
KILL_GRACE = 2.0
# The guard leads the program's process group; argv is [worker pid]. SIGUSR1
# comes from the kernel when the worker dies (or from the guard itself if the
# worker was gone before prctl), and the guard kills its whole group.
GUARD = """
import ctypes, os, signal, sys
def worker_died(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, worker_died)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    worker_died()
while True:
    signal.pause()
"""


class TrialStopped(Exception):
    """The job stopped (cancelled or failed) while this trial was running."""


def placeholders(argv: Sequence[str]) -> list[str]:
    return [m[1] for arg in argv for m in TOKEN.finditer(arg) if m[1] is not None]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_argv(argv: Sequence[str], params: dict[str, Any]) -> list[str]:
    rendered = []
    for arg in argv:
        names = [m[1] for m in TOKEN.finditer(arg) if m[1] is not None]
        if any(name not in params for name in names):
            continue  # names a parameter this trial does not have

        def replace(match: re.Match[str]) -> str:
            if match[0] == "{{":
                return "{"
            if match[0] == "}}":
                return "}"
            return format_value(params[match[1]])

        rendered.append(TOKEN.sub(replace, arg))
    return rendered


def env_name(param: str) -> str:
    return "HUB_PARAM_" + re.sub(r"[^A-Z0-9_]", "_", param.upper())


def trial_env(params: dict[str, Any], context: dict[str, str]) -> dict[str, str]:
    """The trial's HUB_* variables: its context and its parameters."""
    env = dict(context)
    env["HUB_PARAMS"] = json.dumps(params)
    for name, value in params.items():
        env[env_name(name)] = format_value(value)
    return env


def exit_message(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if name == "SIGXCPU":
        return f"killed by SIGXCPU: it used its {settings.HUB_COMMAND_CPU_SECONDS} s of CPU time"
    return f"killed by {name}"


@contextmanager
def guarded_group() -> Iterator[int]:
    """The process group for a program to join (0: a new one), killed if this worker dies.

    On Linux the group is led by a guard started here, before the program, so the
    program never runs unguarded; the group is not the worker's, so whatever kills
    the worker's group spares it. The kernel signals the death of the thread that
    started the guard: the thread that runs the trial. The group is killed on exit.
    """
    if sys.platform != "linux":
        yield 0
        return
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", GUARD, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        process_group=0,
    )
    try:
        yield guard.pid
    finally:
        # The whole group: the guard and whatever the program left running, so
        # nothing of a finished trial goes on using its directory or the machine.
        try:
            os.killpg(guard.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        guard.wait()


def parse_line(line: str) -> tuple[str, Any] | None:
    """("report", (step, value)), ("values", [v, ...]) or None for any other line."""
    parts = line.split()
    if not parts or parts[0] not in ("report", "value", "values"):
        return None
    try:
        if parts[0] == "report" and len(parts) == 3:
            return "report", (int(parts[1]), float(parts[2]))
        if parts[0] == "value" and len(parts) == 2:
            return "values", [float(parts[1])]
        if parts[0] == "values" and len(parts) >= 2:
            return "values", [float(p) for p in parts[1:]]
    except ValueError:
        return None
    return None


def check_argv(argv: Any, space: SearchSpace, field_name: str = "argv") -> None:
    if not isinstance(argv, list) or not argv:
        raise ConfigError(field_name, "must be a non-empty list of strings")
    if not all(isinstance(a, str) for a in argv):
        raise ConfigError(field_name, "must be a list of strings")
    if not argv[0]:
        raise ConfigError(field_name, "the first element must name the program")
    if TOKEN.search(argv[0]) and placeholders(argv[:1]):
        raise ConfigError(field_name, "the program itself cannot be a parameter")
    for name in placeholders(argv):
        if name not in space:
            raise ConfigError(field_name, f"{{{name}}} names no parameter of the search space")


def validate_command_objective(row: CommandObjective) -> None:
    """Raise ConfigError naming the field of a CommandObjective that is invalid."""
    if not isinstance(row.name, str) or not NAME.match(row.name):
        raise ConfigError("name", "use 1 to 100 letters, digits, '_', '-' or '.'")
    directions = row.directions
    if (
        not isinstance(directions, list)
        or not 1 <= len(directions) <= 32
        or any(d not in ("minimize", "maximize") for d in directions)
    ):
        raise ConfigError(
            "directions", 'must be a list like ["minimize"] or ["minimize", "maximize"]'
        )
    row.search_space = validate_search_space(row.search_space)
    if not row.search_space:
        # Studies may only narrow it: it is all the program may ever receive.
        raise ConfigError("search_space", "is required: the parameters the program takes")
    check_registered_strings(row.search_space, row.allow_unsafe_strings)
    check_argv(row.argv, row.search_space)
    env = row.environment
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and ENV_NAME.match(k) and isinstance(v, str) for k, v in env.items()
    ):
        raise ConfigError("environment", "must map variable names to string values")
    check_pass_environment(row.pass_environment)
    if row.working_directory and not os.path.isabs(row.working_directory):
        raise ConfigError("working_directory", "must be an absolute path")
    timeout = row.timeout
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        raise ConfigError("timeout", "must be a number of seconds greater than 0")


@dataclass
class CommandObjectiveInfo(ObjectiveInfo):
    argv: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    pass_environment: list[str] = field(default_factory=list)
    allow_unsafe_strings: bool = False
    working_directory: str = ""
    timeout: float = 3600.0

    @classmethod
    def from_row(cls, row: CommandObjective) -> CommandObjectiveInfo:
        info = cls(
            name=row.name,
            description=row.description,
            directions=list(row.directions),
            search_space=row.search_space,
            kind="command",
            options={"timeout": row.timeout},
            argv=list(row.argv),
            environment=dict(row.environment),
            pass_environment=list(row.pass_environment),
            allow_unsafe_strings=row.allow_unsafe_strings,
            working_directory=row.working_directory,
            timeout=float(row.timeout),
        )
        info.check_space = info.check_declared_space
        return info

    def check_declared_space(self, space: SearchSpace) -> None:
        """A study's space must fit inside ours and define every placeholder of argv."""
        # A stored space may predate today's validation (the job path reads the row).
        space = validate_search_space(space)
        errors = []
        for check in (
            lambda: check_argv(self.argv, space, "search_space"),
            lambda: check_fits(
                space,
                self.search_space,
                objective=self.name,
                allow_unsafe=self.allow_unsafe_strings,
            ),
        ):
            try:
                check()
            except ConfigError as e:
                errors.append(e)
        if errors:
            raise ConfigError.combine(errors)

    def run(
        self, trial: optuna.Trial, params: dict[str, Any], context: RunContext
    ) -> float | Sequence[float]:
        return CommandRun(self, trial, params, context).run()


class CommandRun:
    """One trial's process: start it, follow its output, kill it when told."""

    def __init__(
        self,
        info: CommandObjectiveInfo,
        trial: optuna.Trial,
        params: dict[str, Any],
        context: RunContext,
    ) -> None:
        self.info = info
        self.trial = trial
        self.params = params
        self.context = context
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.process: subprocess.Popen[bytes] | None = None
        self.group = 0  # the process group the program runs in
        self.single = len(trial.study.directions) == 1

    def run(self) -> float | Sequence[float]:
        try:
            # The last line of defence: enqueued trials, old rows, any path at all.
            check_values(self.params, self.info.search_space, self.info.allow_unsafe_strings)
        except ValueError as e:
            raise CommandError(f"not started: {e}") from None
        argv = render_argv(self.info.argv, self.params)
        account = command_account()
        if account is not None:
            protect_hub_files()
        env = program_env(
            self.info.pass_environment,
            self.info.environment,
            trial_env(
                self.params,
                {
                    "HUB_STUDY": self.trial.study.study_name,
                    "HUB_TRIAL_NUMBER": str(self.trial.number),
                    "HUB_JOB_ID": str(self.context.job_id or ""),
                },
            ),
            account,
        )
        with (
            work_directory(self.info.working_directory, account) as cwd,
            guarded_group() as group,
        ):
            try:
                self.process = subprocess.Popen(
                    launch_argv(argv, account),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    # A process group of its own (its guard's), so killing the group
                    # kills what it started too.
                    process_group=group,
                )
            except OSError as e:
                raise CommandError(f"could not start {argv[0]!r} in {cwd}: {e}") from None
            self.group = group or self.process.pid
            reader = threading.Thread(target=self._read, daemon=True)
            reader.start()
            try:
                return self._follow()
            finally:
                self._kill()
                reader.join(timeout=5)
                self._save_tail()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.lines.put(None)

    def _follow(self) -> float | Sequence[float]:
        assert self.process is not None
        deadline = time.monotonic() + self.info.timeout
        result: list[float] | None = None
        while True:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                self.tail.append(line[:LINE_CHARS])
                parsed = parse_line(line)
                if parsed and parsed[0] == "values":
                    result = parsed[1]
                elif parsed and parsed[0] == "report" and self.single:
                    step, value = parsed[1]
                    self.trial.report(value, step)
                    if self.trial.should_prune():
                        self._kill()
                        raise optuna.TrialPruned(f"pruned at step {step} (value {value})")
            if time.monotonic() > deadline:
                self._kill()
                raise CommandError(f"killed after the timeout of {self.info.timeout:g} s")
            if self.context.should_stop():
                self._kill()
                raise TrialStopped("killed: the job was stopped")
        code = self.process.wait()
        if code == 127 and self.tail and self.tail[-1].startswith(START_FAILED):
            raise CommandError(self.tail[-1].removeprefix("hub: "))
        if code != 0:
            raise CommandError(exit_message(code))
        if result is None:
            raise CommandError("printed no result line ('value <v>' or 'values <v1> <v2> ...')")
        if len(result) != len(self.trial.study.directions):
            raise CommandError(
                f"printed {len(result)} value(s) for {len(self.trial.study.directions)} "
                "direction(s)"
            )
        return result[0] if self.single else result

    def _kill(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(self.group, signal.SIGTERM)
            try:
                process.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.group, signal.SIGKILL)
                process.wait()
        except ProcessLookupError:
            pass

    def _save_tail(self) -> None:
        text = "\n".join(self.tail)[-TAIL_CHARS:]
        try:
            self.trial.storage.set_trial_system_attr(self.trial._trial_id, "hub_output_tail", text)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
