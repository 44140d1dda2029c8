"""Put a backup made by `manage.py backup` onto an empty database, then migrate it.

    python3 manage.py restore /backups/hub-2026-05-01.sqlite3

Stop the hub first (web server and workers). The database named by DATABASE_URL
(default: var/hub.sqlite3) must hold no hub data: a new SQLite file, a new
PostgreSQL database, or one that was only migrated. A backup made by an older
version of the hub is migrated to this one; a file that is not a hub backup is
refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.ops.backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup onto the hub's database, which must be empty (new or only migrated), "
        "then migrate it. Stop the hub (web server and workers) first. PostgreSQL: pg_restore "
        "must be on PATH."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="a file written by `manage.py backup`")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            restored = restore(options["path"])
        except BackupError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(restored.summary())
