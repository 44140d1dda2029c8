"""Token authentication, DRF's against the hub's, side by side in one process.

    .venv/bin/python benchmarks/token_auth.py [--calls 5000]

DRF's looks up a plain-text key with the ORM; the hub's looks up the key's
SHA-256 with one raw query that also reads expiry and revocation. Each
authenticates its own token of the same user on a fresh SQLite file, in
alternating rounds so that neither gets a quieter machine; prints the mean
time per call. The hub does not install DRF's token app; this script adds it.
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
    from django.conf import settings

    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "rest_framework.authtoken"]
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework import authentication
    from rest_framework.authtoken.models import Token

    from studies.api.authentication import TokenAuthentication
    from studies.models import ApiToken

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    contenders = {
        "DRF TokenAuthentication": (
            authentication.TokenAuthentication(),
            Token.objects.create(user=user).key,
        ),
        "hub TokenAuthentication": (TokenAuthentication(), ApiToken.issue(user, "bench")[1]),
    }
    totals = dict.fromkeys(contenders, 0.0)
    rounds = 5
    for _ in range(rounds):
        for label, (auth, key) in contenders.items():
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
