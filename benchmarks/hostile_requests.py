"""How fast the hub refuses the requests of issue #9 that used to exhaust or break it.

    .venv/bin/python benchmarks/hostile_requests.py [--repeat 5]

In this one process, on a fresh SQLite file, sends each hostile request of the
issue through Django's test client (the whole middleware, DRF and validation
stack; no network) and prints its status and the median time over N repeats;
then the largest ask the limits allow (HUB_MAX_PARAMS floats declared in the
body), whose cost grows with the parameter count. Before the fixes, the grid
request ran 9 s into a MemoryError, n_ei_candidates 2e7 hung every later ask
past 100 s, and an ask of 2000 floats took 12.9 s (the issue's figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SCRATCH = Path(tempfile.mkdtemp(prefix="hub-bench-"))
os.environ["DATABASE_URL"] = f"sqlite:///{SCRATCH / 'hub.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "optuna_hub.settings")
os.environ["ALLOWED_HOSTS"] = "testserver"  # the test client's host

import django  # noqa: E402

INT_3000 = {"type": "int", "low": 1, "high": 3000}


def nested(depth: int) -> str:
    """JSON text nested ``depth`` objects deep (json.dumps itself recurses)."""
    return '{"a": ' * depth + "1" + "}" * depth


def floats(n: int) -> dict:
    return {f"x{i}": {"type": "float", "low": 0, "high": 1} for i in range(n)}


HOSTILE = {
    "grid of 5^20 points": {
        "sampler": {
            "type": "grid",
            "options": {"search_space": {f"p{i}": [0, 1, 2, 3, 4] for i in range(20)}},
        }
    },
    "declared 2 x 3000 int grid": {
        "sampler": {"type": "grid"},
        "search_space": {"a": INT_3000, "b": INT_3000},
    },
    "tpe n_ei_candidates 2e7": {
        "sampler": {"type": "tpe", "options": {"n_ei_candidates": 20_000_000}}
    },
    "nsga2 population 1e7": {"sampler": {"type": "nsga2", "options": {"population_size": 10**7}}},
    "tpe prior_weight NaN": {"sampler": {"type": "tpe", "options": {"prior_weight": "NaN"}}},
    "user_attrs 600 deep": {"user_attrs": "DEEP600"},
    "user_attrs 100,000 deep": {"user_attrs": "DEEP100000"},
    "NUL in user_attrs": {"user_attrs": {"note": "a\u0000b"}},
}


def median_ms(call, repeat: int) -> tuple[int, float]:
    times, status = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        status = call()
        times.append((time.perf_counter() - start) * 1000)
    return status, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    django.setup()
    logging.getLogger("django.request").setLevel(logging.ERROR)  # each 400 is expected
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.test import APIClient

    call_command("migrate", verbosity=0)
    api = APIClient()
    api.force_authenticate(User.objects.create_user("mallory"))

    def create(body: dict, name: str) -> int:
        # As a client sends it: the text, so NaN and depth reach the parser as they would.
        text = json.dumps({"name": name, **body}).replace('"NaN"', "NaN")
        for depth in (600, 100_000):
            text = text.replace(f'"DEEP{depth}"', nested(depth))
        response = api.post("/api/studies/", text, content_type="application/json")
        fields.append(",".join(response.json()) if response.status_code == 400 else "")
        return response.status_code

    print(f"median of {args.repeat}, Django test client, SQLite")
    print(f"{'request':34} {'status':>6} {'ms':>8}  field named")
    fields: list[str] = []
    for label, body in HOSTILE.items():
        status, ms = median_ms(lambda body=body: create(body, "hostile"), args.repeat)
        print(f"{label:34} {status:>6} {ms:8.1f}  {fields[-1]}")
    limit = settings.HUB_MAX_PARAMS
    study_id = api.post("/api/studies/", {"name": "wide"}, format="json").json()["id"]
    for n in (10, limit // 2, limit, limit + 1):
        status, ms = median_ms(
            lambda n=n: (
                api.post(
                    f"/api/studies/{study_id}/ask/", {"search_space": floats(n)}, format="json"
                ).status_code
            ),
            args.repeat,
        )
        print(f"{f'ask declaring {n} floats':34} {status:>6} {ms:8.1f}")
    studies = api.get("/api/studies/")
    print(f"then GET /api/studies/: {studies.status_code}, {studies.json()['count']} studies")


if __name__ == "__main__":
    main()
