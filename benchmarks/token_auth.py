"""Token authentication, DRF's against the hub's, side by side in one process.

    .venv/bin/python benchmarks/token_auth.py [--calls 5000]

Both authenticate the same token on a fresh SQLite file, alternating rounds so
that neither gets a quieter machine; prints the mean time per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SCRATCH = Path(tempfile.mkdtemp(prefix="hub-token-bench-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="optuna_hub.settings",
    HUB_VAR_DIR=str(SCRATCH),
    DATABASE_URL=f"sqlite:///{SCRATCH / 'hub.sqlite3'}",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework import authentication
    from rest_framework.authtoken.models import Token

    from studies.api.authentication import TokenAuthentication

    call_command("migrate", verbosity=0)
    key = Token.objects.create(user=User.objects.create_user("bench")).key
    contenders = {
        "DRF TokenAuthentication": authentication.TokenAuthentication(),
        "hub TokenAuthentication": TokenAuthentication(),
    }
    totals = dict.fromkeys(contenders, 0.0)
    rounds = 5
    for _ in range(rounds):
        for label, auth in contenders.items():
            assert auth.authenticate_credentials(key)[0].username == "bench"
            start = time.perf_counter()
            for _ in range(args.calls // rounds):
                auth.authenticate_credentials(key)
            totals[label] += time.perf_counter() - start
    print(f"{args.calls} calls each, SQLite, one process")
    for label, total in totals.items():
        print(f"{label:<25} {total / args.calls * 1000:.3f} ms per call")


if __name__ == "__main__":
    main()
