#!/usr/bin/env python3
"""Django's command-line utility, plus a bootstrap so a fresh clone needs only Python 3.11.

Run with any python3: if it is not the project's virtualenv (.venv), the virtualenv
is created (or refreshed when requirements.txt changed) and the command re-runs in it.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
VENV = BASE_DIR / ".venv"
VENV_PYTHON = VENV / "bin" / "python"


def ensure_virtualenv() -> None:
    if Path(sys.prefix).resolve() == VENV.resolve() or os.environ.get("HUB_NO_BOOTSTRAP"):
        return
    requirements = BASE_DIR / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if not VENV_PYTHON.exists():
        print("Creating the virtualenv in .venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != digest:
        print("Installing requirements.txt into .venv (first run only) ...", flush=True)
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        # From the project root: requirements.txt names the client by its path (./client).
        subprocess.run([*pip, "-r", str(requirements)], check=True, cwd=BASE_DIR)
        stamp.write_text(digest)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])


def main() -> None:
    ensure_virtualenv()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
