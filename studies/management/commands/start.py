"""Run the whole hub in one terminal: migrations, a web server and a worker cluster.

`python3 manage.py start` is the embedded default (SQLite + the django-q2 ORM
broker, no other service). Ctrl-C stops the web server and the workers together.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Migrate, then run the web server and a qcluster worker until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin()
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        processes = [
            subprocess.Popen([*manage, "runserver", "--noreload", options["addrport"]]),
            subprocess.Popen([*manage, "qcluster"]),
        ]
        self.stdout.write(
            f"Optuna Hub is running at http://{options['addrport']}/ "
            f"(database: {settings.DATABASES['default']['NAME']}). Ctrl-C stops it."
        )
        try:
            # Both run until Ctrl-C; if one dies, stop the other rather than limp on.
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            self.stderr.write("A hub process exited; stopping the other.")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the web server and the workers ...")
        finally:
            for p in processes:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in processes:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()

    def ensure_admin(self) -> None:
        users = get_user_model().objects
        if users.exists():
            return
        password = os.environ.get("HUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser("admin", password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created the first user: admin / {password} (change it in /admin/)")
        )
