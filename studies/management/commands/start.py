"""Run the whole hub in one terminal: migrations, a web server and a worker cluster.

`python3 manage.py start` is the embedded default (SQLite + the django-q2 ORM
broker, no other service). Ctrl-C stops the web server and the workers together.
"""

from __future__ import annotations

import contextlib
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
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Migrate, then run the web server and a qcluster worker until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--workers",
            type=int,
            # More than a few gain nothing on one SQLite file and cost memory each.
            default=min(os.cpu_count() or 2, 4),
            help="web server processes (default: one per CPU, at most 4)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin()
        # gunicorn's sync workers, one per CPU: a free worker takes the next request,
        # so a busy one never holds up another's queue (docs/benchmarks.md).
        web = [sys.executable, "-m", "gunicorn", "optuna_hub.wsgi"]
        web += ["--bind", options["addrport"], "--workers", str(options["workers"])]
        web += ["--timeout", "300", "--no-control-socket", "--chdir", str(settings.BASE_DIR)]
        cluster = [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]
        # Each in its own process group, so Ctrl-C reaches only this command, which
        # stops each one once: django-q2's cluster hangs when its workers get the
        # terminal's SIGINT as well as its sentinel's stop.
        processes = [subprocess.Popen(argv, start_new_session=True) for argv in (web, cluster)]
        self.stdout.write(
            f"Optuna Hub is running at http://{options['addrport']}/ "
            f"(database: {settings.DATABASES['default']['NAME']}). Ctrl-C stops it."
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the same way
        exited = None
        try:
            # Both run until Ctrl-C; if one dies, stop the other rather than limp on.
            while exited is None:
                time.sleep(0.5)
                exited = next((p for p in processes if p.poll() is not None), None)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the web server and the workers ...")
        finally:
            for p in processes:
                if p.poll() is None:
                    p.terminate()
            for p in processes:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)  # a worker left behind
                p.wait()
        if exited is not None:
            which = "web server" if exited is processes[0] else "worker cluster"
            raise CommandError(f"the {which} exited (code {exited.returncode}); stopped the hub")

    def ensure_admin(self) -> None:
        users = get_user_model().objects
        if users.exists():
            return
        password = os.environ.get("HUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser("admin", password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created the first user: admin / {password} (change it in /admin/)")
        )
