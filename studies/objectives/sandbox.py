"""How a command objective's program runs: what it sees, who it is, what it may use.

- Environment, an allowlist: of the worker's variables the program sees only
  those named in ``HUB_COMMAND_ENV_ALLOWLIST`` and in the objective's
  ``pass_environment`` (``NAME`` or ``PREFIX*``), never the hub's own
  (``is_private``); then the objective's ``environment`` values and the trial's
  ``HUB_*`` variables on top.
- User: with ``HUB_COMMAND_USER`` set, a worker running as root runs the program
  as that user, in that user's group and no other. First it takes group and
  others' access to the hub's private files (the secret key, the SQLite
  database and its journals), which that user is one of the "others" of.
- Limits, per program process: CPU seconds (``HUB_COMMAND_CPU_SECONDS``),
  memory it may allocate (``HUB_COMMAND_MEMORY_MB``, RLIMIT_DATA: heap and
  private mappings, not shared libraries or reserved address space), open files
  (``HUB_COMMAND_MAX_FILES``), and no core files; 0 turns a limit off.
- Directory: a fresh one per trial under ``HUB_COMMAND_WORK_DIR``, owned by the
  program's user and removed after the trial (one a dead worker left, when the
  next trial on that machine starts), unless staff set the objective's
  ``working_directory``.

The limits and the user switch are applied by LAUNCHER, a few lines of Python
that then become the program (exec), rather than by ``preexec_fn``, which may
deadlock in a worker that runs trials in threads. The launcher starts as the
worker so that it can run this interpreter (which the program's user may not
be able to read) before it drops privileges. The guard that leads the process
group (command.py) is started without any of this, so it can always kill the
group.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from studies.config.errors import ConfigError

ENV_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")
# Variables of the hub itself a program has no business seeing, whatever a list says.
PRIVATE_ENV = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "DJANGO_SETTINGS_MODULE",
        "PGPASSWORD",
        "PGPASSFILE",
    }
)
# The worker's HUB_* variables are the hub's settings; a trial's own HUB_* are set per trial.
PRIVATE_PREFIX = "HUB_"
SQLITE_FILES = ("", "-wal", "-shm", "-journal")
START_FAILED = "hub: could not start"
LAUNCHER = f"""
import os, resource, sys
cpu, memory, files, uid, gid = map(int, sys.argv[1:6])
argv = sys.argv[7:]
def cap(kind, soft, hard):
    old = resource.getrlimit(kind)[1]
    if old != resource.RLIM_INFINITY:
        soft, hard = min(soft, old), min(hard, old)
    resource.setrlimit(kind, (soft, hard))
cap(resource.RLIMIT_CORE, 0, 0)
if cpu > 0:
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the limit, SIGKILL a second later
if memory > 0:
    cap(resource.RLIMIT_DATA, memory, memory)
if files > 0:
    cap(resource.RLIMIT_NOFILE, files, files)
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
try:
    os.execvp(argv[0], argv)
except OSError as e:
    print("{START_FAILED} %r: %s" % (argv[0], e), flush=True)
    sys.exit(127)
"""


class CommandError(Exception):
    """The program failed: the message says how (exit code, timeout, no result)."""


@dataclass(frozen=True)
class Account:
    """The unprivileged user a program runs as."""

    name: str
    uid: int
    gid: int
    home: str


def is_private(name: str) -> bool:
    return name in PRIVATE_ENV or name.startswith(PRIVATE_PREFIX)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def check_pass_environment(names: Any, field: str = "pass_environment") -> None:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(field, 'must be a list of variable names, e.g. ["WANDB_API_KEY"]')
    for name in names:
        if not ENV_PATTERN.match(name):
            raise ConfigError(field, f"{name!r} is not a variable name (NAME or PREFIX*)")
        if is_private(name.rstrip("*")):
            raise ConfigError(field, f"{name!r} would pass the hub's own settings or secrets")


def program_env(
    pass_environment: Sequence[str],
    values: dict[str, str],
    trial_vars: dict[str, str],
    account: Account | None,
) -> dict[str, str]:
    """The program's whole environment."""
    patterns = [*settings.HUB_COMMAND_ENV_ALLOWLIST, *pass_environment]
    env = {k: v for k, v in os.environ.items() if not is_private(k) and matches(k, patterns)}
    if account is not None:
        # The worker's HOME is root's, which that user cannot use.
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(trial_vars)
    return env


def command_account() -> Account | None:
    """The user to run programs as, or None to run them as the worker is.

    A setting this worker cannot honour is a CommandError (the trial fails with
    it) rather than a program quietly run with the worker's rights.
    """
    name = settings.HUB_COMMAND_USER
    if not name:
        return None
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise CommandError(f"HUB_COMMAND_USER={name!r} names no user on this machine") from None
    if entry.pw_uid == 0:
        raise CommandError(f"HUB_COMMAND_USER={name!r} must name an unprivileged user, not root")
    if entry.pw_uid == os.geteuid():
        return None  # the worker already runs as that user
    if os.geteuid() != 0:
        raise CommandError(
            f"HUB_COMMAND_USER={name!r} is set but this worker runs as uid {os.geteuid()}, "
            "not root, so it cannot switch to that user"
        )
    home = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, home)


def protect_hub_files() -> None:
    """Take group and others' access to the secret key and the SQLite database files.

    SQLite creates its database (and then its -wal and -shm files, which hold
    recent writes, with the same mode) readable by everyone under the usual
    umask, and the database holds password hashes and API tokens.
    """
    paths = [Path(settings.VAR_DIR) / "secret_key"]
    database = connections["default"].settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        paths += [Path(f"{database['NAME']}{suffix}") for suffix in SQLITE_FILES]
    for path in paths:
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            path.chmod(stat.S_IMODE(info.st_mode) & ~0o077)


@contextmanager
def work_directory(fixed: str, account: Account | None) -> Iterator[str]:
    """The directory the program runs in: staff's, or a fresh one removed afterwards."""
    if fixed:
        yield fixed
        return
    root = Path(settings.HUB_COMMAND_WORK_DIR)
    mine = f"trial-{socket.gethostname()}-"
    try:
        # Others may pass through to their own directory, not list the trials.
        root.mkdir(mode=0o711, parents=True, exist_ok=True)
        remove_orphans(root, mine)
        path = tempfile.mkdtemp(prefix=f"{mine}{os.getpid()}-", dir=root)
    except OSError as e:
        raise CommandError(f"could not make a working directory in {root}: {e}") from None
    try:
        if account is not None:
            os.chown(path, account.uid, account.gid)
        yield path
    finally:
        # rmtree does not follow the symbolic links a program may leave.
        shutil.rmtree(path, ignore_errors=True)


def remove_orphans(root: Path, prefix: str) -> None:
    """Remove the directories of trials whose worker on this machine died (SIGKILL, a crash).

    Their programs died with their worker (the guard), so nothing uses them. The
    host name keeps workers of other machines sharing the directory out of it.
    """
    for entry in root.glob(f"{prefix}*"):
        pid = entry.name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass  # alive, as another user


def launch_argv(argv: Sequence[str], account: Account | None) -> list[str]:
    """The argv that starts LAUNCHER, which sets the limits and becomes ``argv``."""
    memory = settings.HUB_COMMAND_MEMORY_MB * 1024 * 1024
    uid, gid = (account.uid, account.gid) if account is not None else (-1, -1)
    limits = [settings.HUB_COMMAND_CPU_SECONDS, memory, settings.HUB_COMMAND_MAX_FILES, uid, gid]
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, *map(str, limits), "--", *argv]
