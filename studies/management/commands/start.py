"""Run the whole hub in one terminal: migrations, a web server and a worker cluster.

`python3 manage.py start` is the embedded default (SQLite + the django-q2 ORM
broker, no other service). Ctrl-C stops the web server and the workers together
within seconds: a worker busy with a job is stopped at once and its running
trials are handed back (failed, to re-run with the same params), which it says.
The next start says which jobs resume.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from studies.jobs.base import counted_trials
from studies.jobs.tasks import busy_workers, check_jobs, hand_back
from studies.models import Job
from studies.ops.metrics import fresh_multiprocess_dir

# How long the web server and an idle cluster get to stop before SIGKILL.
STOP_TIMEOUT = 30


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
        # The web processes count requests, asks and tells in files there, so /metrics
        # adds up all of them whichever one answers (prometheus_client's multiprocess mode).
        metrics_dir = fresh_multiprocess_dir(settings.VAR_DIR)
        web_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        processes = [
            subprocess.Popen(web, start_new_session=True, env=web_env),
            subprocess.Popen(cluster, start_new_session=True),
        ]
        self.stdout.write(
            f"Optuna Hub is running at http://{options['addrport']}/ "
            f"(database: {settings.DATABASES['default']['NAME']}). Ctrl-C stops it."
        )
        self.resume_jobs()
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
            self.stop(*processes)
        if exited is not None:
            which = "web server" if exited is processes[0] else "worker cluster"
            raise CommandError(f"the {which} exited (code {exited.returncode}); stopped the hub")

    def resume_jobs(self) -> None:
        """Say which jobs a previous run left active, and queue them now."""
        jobs = list(Job.objects.active().select_related("study").order_by("pk"))
        if not jobs:
            return
        check_jobs()  # frees slots whose workers died and queues them at once
        for job in jobs:
            rerun = len(job.retry_params)
            again = f"; {rerun} handed-back trial(s) re-run first" if rerun else ""
            self.stdout.write(
                f"Resuming job {job.pk} of study '{job.study.name}' "
                f"({counted_trials(job.pk)}/{job.n_trials} trials done{again})."
            )

    def stop(self, web: subprocess.Popen, cluster: subprocess.Popen) -> None:
        """Stop both; a worker busy with a job is killed and its trials handed back.

        django-q2's cluster waits for each worker's task to end, and a task runs a
        whole job, so the cluster is asked to stop (no new task starts) and the
        workers that hold a job slot are killed at once; their running trials
        are failed and queued to re-run with the same params, and their slots are
        freed, so the next start resumes the jobs immediately.
        """
        for p in (web, cluster):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        while cluster.poll() is None and time.monotonic() < deadline:
            self.hand_back_busy(cluster.pid)
            time.sleep(0.2)
        for p in (web, cluster):
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # a process left behind
            p.wait()
        self.hand_back_busy(cluster.pid)  # a worker that outlived the SIGKILL fallback

    def hand_back_busy(self, group: int) -> None:
        host = socket.gethostname()
        pids = {f"{host}:{pid}": pid for pid in group_members(group)}
        busy = busy_workers(pids)
        if not busy:
            return
        for name in busy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[name], signal.SIGKILL)  # its program dies with it (the guard)
        end = time.monotonic() + 5
        while any(Path(f"/proc/{pids[name]}").exists() for name in busy):
            if time.monotonic() > end:
                break
            time.sleep(0.05)
        for line in hand_back(busy):
            self.stdout.write(line)

    def ensure_admin(self) -> None:
        users = get_user_model().objects
        if users.exists():
            return
        password = os.environ.get("HUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser("admin", password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created the first user: admin / {password} (change it in /admin/)")
        )


def group_members(group: int) -> set[int]:
    """The live processes of a process group (Linux's /proc; elsewhere none)."""
    members = set()
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                # state, ppid, pgrp follow the ")" that ends the command name
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == group:
                    members.add(int(entry.name))
    return members
