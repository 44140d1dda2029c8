"""Backups of the hub's database while it runs, and restores onto an empty one.

SQLite: the copy is made with SQLite's online backup API in a single step, so
it reads one snapshot of the database. The hub runs SQLite in WAL mode
(settings.database_from_url), where a reader's snapshot does not block writers:
a job keeps committing trials while the copy is made, and the copy holds every
trial committed before it started and none of the later ones. The backup API
was chosen over ``VACUUM INTO`` because it copies pages instead of rebuilding
every table and index (less work on a large database while the hub serves), and
the restore uses the same API to write the configured file.

PostgreSQL: ``pg_dump -Fc`` (a consistent snapshot by itself), run in a snapshot
the hub exports, so the trial count printed is the dump's own. The password
goes to pg_dump and pg_restore through PGPASSWORD, never on a command line.

A restore only goes onto a database without hub data (new, or just migrated),
then migrates it, so a backup made by an older version comes up to date.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.loader import MigrationLoader

from studies.models import ApiToken, AuditEntry, CommandObjective, Job, Study, Team, Trial

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
# The libpq variables pg_dump and pg_restore read, from Django's OPTIONS keys.
PG_OPTION_VARIABLES = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}
PG_CLIENT_HINT = (
    "install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client; "
    "the same major version as the server or newer)"
)
# Seconds a restore waits for a lock on the SQLite file; a running hub holds it.
SQLITE_LOCK_TIMEOUT = 2.0


class BackupError(Exception):
    """A backup or restore that cannot be done; the message is one line for the user."""


@dataclass
class Written:
    path: Path
    size: int
    n_trials: int
    vendor: str

    def summary(self) -> str:
        return (
            f"Backed up the {VENDOR_NAMES[self.vendor]} database to {self.path} "
            f"({human_size(self.size)}, {self.n_trials} trials)."
        )


VENDOR_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def human_size(size: int) -> str:
    value, unit = float(size), "bytes"
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def database() -> BaseDatabaseWrapper:
    return connections["default"]


def hub_tables() -> dict[str, str]:
    """What each table holding the hub's data is called, by what it holds."""
    models = [get_user_model(), Study, Trial, Job, ApiToken, Team, CommandObjective, AuditEntry]
    return {str(model._meta.verbose_name_plural): model._meta.db_table for model in models}


def hub_data(connection: BaseDatabaseWrapper) -> dict[str, int]:
    """Rows in each table of hub data that has any (a fresh, migrated database: none)."""
    existing = set(connection.introspection.table_names())
    counts = {}
    with connection.cursor() as cursor:
        for what, table in hub_tables().items():
            if table in existing:
                cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
                if n := cursor.fetchone()[0]:
                    counts[what] = n
    return counts


# Backup


def backup(path: Path, *, force: bool = False) -> Written:
    """Write a consistent copy of the hub's database to ``path`` (all of it or nothing)."""
    connection = database()
    path = path.expanduser().absolute()
    if path.is_dir():
        raise BackupError(f"{path} is a directory: name the backup file to write")
    if not path.parent.is_dir():
        raise BackupError(f"no directory {path.parent} to write the backup in")
    if path.exists() and not force:
        raise BackupError(f"{path} exists: choose another name, or pass --force to replace it")
    vendor = connection.vendor
    if vendor == "sqlite":
        source = Path(connection.settings_dict["NAME"]).absolute()
        wal_or_shm = path.parent == source.parent and path.name.startswith(source.name + "-")
        if same_file(path, source) or wal_or_shm:
            raise BackupError(f"{path} is the hub's database itself: write the backup elsewhere")
    elif vendor != "postgresql":
        raise BackupError(f"backups of {vendor} databases are not supported (SQLite, PostgreSQL)")
    draft = path.parent / f".{path.name}.{os.getpid()}.partial"
    draft.unlink(missing_ok=True)  # left by a crashed backup with this pid
    # 0600 from its creation: it holds password and token hashes.
    os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        if vendor == "sqlite":
            n_trials = sqlite_backup(source, draft)
        else:
            n_trials = postgres_backup(connection, draft)
        with open(draft, "rb") as file:
            os.fsync(file.fileno())
        put_in_place(draft, path, force)
    finally:
        draft.unlink(missing_ok=True)
    return Written(path, path.stat().st_size, n_trials, vendor)


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def put_in_place(draft: Path, path: Path, force: bool) -> None:
    if force:
        os.replace(draft, path)
        return
    try:
        os.link(draft, path)  # fails if a file appeared there meanwhile: never overwritten
    except FileExistsError:
        raise BackupError(f"{path} exists: choose another name, or pass --force") from None


def sqlite_backup(source: Path, draft: Path) -> int:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}: nothing to back up")
    src = sqlite3.connect(f"{source.as_uri()}?mode=rw", uri=True, timeout=30)
    dst = sqlite3.connect(draft)
    try:
        src.backup(dst)  # pages=-1: the whole database in one step, from one snapshot
        # A single self-contained file, whatever the hub's journal mode.
        dst.execute("PRAGMA journal_mode=DELETE")
        return dst.execute(f"SELECT COUNT(*) FROM {Trial._meta.db_table}").fetchone()[0]
    except sqlite3.Error as e:
        raise BackupError(f"the SQLite backup failed: {e}") from None
    finally:
        dst.close()
        src.close()


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not on PATH: {PG_CLIENT_HINT}")
    return found


def pg_env(settings_dict: dict[str, Any]) -> dict[str, str]:
    """The environment that connects libpq tools to the hub's database (password included).

    PG* variables already set stay, as the hub's own connection (libpq) reads them too.
    """
    env = dict(os.environ)
    values = {
        "PGDATABASE": settings_dict.get("NAME"),
        "PGUSER": settings_dict.get("USER"),
        "PGPASSWORD": settings_dict.get("PASSWORD"),
        "PGHOST": settings_dict.get("HOST"),
        "PGPORT": settings_dict.get("PORT"),
    }
    for key, variable in PG_OPTION_VARIABLES.items():
        values[variable] = (settings_dict.get("OPTIONS") or {}).get(key)
    env.update({k: str(v) for k, v in values.items() if v not in (None, "")})
    return env


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def postgres_backup(connection: BaseDatabaseWrapper, draft: Path) -> int:
    pg_dump = pg_tool("pg_dump")
    # pg_dump dumps in the snapshot this transaction exports, so the count is the dump's.
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(Trial._meta.db_table)}")
        n_trials = cursor.fetchone()[0]
        argv = [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={draft}"]
        result = subprocess.run(
            argv, env=pg_env(connection.settings_dict), capture_output=True, text=True
        )
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {last_line(result.stderr)}")
    return n_trials


# Restore


@dataclass
class Restored:
    path: Path
    vendor: str
    target: str
    n_studies: int
    n_trials: int

    def summary(self) -> str:
        return (
            f"Restored {self.path} into the {VENDOR_NAMES[self.vendor]} database {self.target} "
            f"({self.n_studies} studies, {self.n_trials} trials) and migrated it to this version."
        )


def backup_kind(path: Path) -> str:
    """ "sqlite" or "postgresql": which database made the backup at ``path``."""
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    with open(path, "rb") as file:
        head = file.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupError(
        f"{path} is not a hub backup (neither a SQLite database nor a pg_dump -Fc archive)"
    )


def sqlite_migrations(path: Path) -> set[tuple[str, str]]:
    """The migrations a SQLite backup records; raises BackupError unless it is a hub's."""
    try:
        # Read-only: checking a backup never changes it.
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if not {"django_migrations", Study._meta.db_table} <= tables:
                raise BackupError(f"{path} is a SQLite database but not an Optuna Hub's")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{path} is damaged (SQLite's check says: {check})")
            return set(db.execute("SELECT app, name FROM django_migrations"))
    except sqlite3.Error as e:
        raise BackupError(f"{path} cannot be read as a SQLite database: {e}") from None


def postgres_migrations(path: Path) -> set[tuple[str, str]]:
    """The migrations a pg_dump archive records; raises BackupError unless it is a hub's."""
    pg_restore = pg_tool("pg_restore")
    listing = subprocess.run([pg_restore, "--list", str(path)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise BackupError(f"{path} is not a readable pg_dump archive: {last_line(listing.stderr)}")
    if not re.search(rf"TABLE DATA \S+ {re.escape(Study._meta.db_table)} ", listing.stdout):
        raise BackupError(f"{path} is a pg_dump archive but not of an Optuna Hub database")
    data = subprocess.run(
        [pg_restore, "--data-only", "--table=django_migrations", "--file=-", str(path)],
        capture_output=True,
        text=True,
    )
    if data.returncode != 0:
        raise BackupError(f"{path} cannot be read: {last_line(data.stderr)}")
    # COPY public.django_migrations (id, app, name, applied) FROM stdin; rows; "\."
    rows, copying = set(), False
    for line in data.stdout.splitlines():
        if line.startswith("COPY "):
            copying = True
        elif line == "\\.":
            copying = False
        elif copying:
            fields = line.split("\t")
            rows.add((fields[1], fields[2]))
    return rows


def check_not_newer(path: Path, recorded: set[tuple[str, str]]) -> None:
    """Refuse a backup made by a newer hub: this code could not read its tables."""
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    unknown = sorted(name for app, name in recorded - known if app == "studies")
    if unknown:
        raise BackupError(
            f"{path} was made by a newer version of the hub (migration {unknown[-1]} is "
            f"unknown here): upgrade the hub, then restore"
        )


def restore(path: Path) -> Restored:
    """Put the backup at ``path`` onto the hub's database, which must hold no hub data."""
    connection = database()
    path = path.expanduser().absolute()
    kind = backup_kind(path)
    if kind != connection.vendor:
        raise BackupError(
            f"{path} is a {VENDOR_NAMES[kind]} backup but this hub's database is "
            f"{VENDOR_NAMES.get(connection.vendor, connection.vendor)}: set DATABASE_URL to a "
            f"{VENDOR_NAMES[kind]} database"
        )
    recorded = sqlite_migrations(path) if kind == "sqlite" else postgres_migrations(path)
    check_not_newer(path, recorded)
    if kind == "sqlite":
        target = Path(connection.settings_dict["NAME"]).absolute()
        if same_file(path, target):
            raise BackupError(f"{path} is the hub's database itself")
    else:
        target = connection.settings_dict["NAME"]
    if found := hub_data(connection):
        held = ", ".join(f"{n} {what}" for what, n in found.items())
        raise BackupError(
            f"the database {target} already holds hub data ({held}): restore only onto "
            f"an empty database (a new SQLite file or a new PostgreSQL database)"
        )
    if kind == "sqlite":
        connection.close()
        sqlite_restore(path, target)
    else:
        postgres_restore(connection, path)
    connections.close_all()
    call_command("migrate", interactive=False, verbosity=0)
    return Restored(path, kind, str(target), Study.objects.count(), Trial.objects.count())


def sqlite_restore(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    dst = sqlite3.connect(target, timeout=SQLITE_LOCK_TIMEOUT, isolation_level=None)
    try:
        try:
            # Leaving WAL mode needs the only connection to the file: a running hub
            # (each of its processes keeps one open) makes this fail.
            dst.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError:
            raise BackupError(
                f"{target} is in use by another process: stop the hub (web server and "
                f"workers), then restore"
            ) from None
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as src:
            src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")  # as the hub runs it
    except sqlite3.Error as e:
        raise BackupError(f"the SQLite restore failed: {e}") from None
    finally:
        dst.close()


def postgres_restore(connection: BaseDatabaseWrapper, path: Path) -> None:
    pg_restore = pg_tool("pg_restore")
    # A freshly migrated database has this version's tables; those an older backup
    # lacks would be left behind by --clean and break the migrate that follows.
    # The check above found no hub data in them, so they go first.
    tables = connection.introspection.django_table_names(only_existing=True)
    existing = set(connection.introspection.table_names())
    tables = sorted({*tables, "django_migrations"} & existing)
    if tables:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            quoted = ", ".join(connection.ops.quote_name(t) for t in tables)
            cursor.execute(f"DROP TABLE IF EXISTS {quoted} CASCADE")
    connection.close()
    settings_dict = connection.settings_dict
    argv = [pg_restore, "--no-owner", "--clean", "--if-exists", "--single-transaction"]
    argv += [f"--dbname={settings_dict['NAME']}", str(path)]
    result = subprocess.run(argv, env=pg_env(settings_dict), capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed, nothing was restored: {last_line(result.stderr)}")
