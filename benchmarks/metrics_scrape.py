"""Server time of GET /metrics on a large hub, beside the study list it shares the data with.

    .venv/bin/python benchmarks/metrics_scrape.py                  # 100 studies x 1 000 trials
    .venv/bin/python benchmarks/metrics_scrape.py --studies 10 --trials 10000
    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/metrics_scrape.py

The studies are built as benchmarks/pages.py builds them (bulk_create, a fresh
SQLite database unless DATABASE_URL is set). Requests go through Django's test
client in this process from 127.0.0.1 (an allowed scraper), so the times are
server time. "first" is the first scrape of the process (it reads every finished
trial's duration once), "warm" a scrape with nothing changed, "+1 study" and
"+10 studies" scrapes after that many studies got one more finished trial. The
studies list `/` is timed beside it as the page every user loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pages import add_trial, make_study, setup_django  # noqa: E402


def timed_ms(client, url: str) -> float:  # noqa: ANN001
    began = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def run(n_studies: int, n_trials: int, repeats: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from studies.models import Study

    user, _ = get_user_model().objects.get_or_create(username="bench")
    scraper = Client(SERVER_NAME="localhost", REMOTE_ADDR="127.0.0.1")
    page = Client(SERVER_NAME="localhost")
    page.force_login(user)
    began = time.perf_counter()
    stamp = time.time_ns()
    studies = [
        make_study(f"bench-metrics-{stamp}-{i}", n_trials, owner=user) for i in range(n_studies)
    ]
    print(
        f"database: {connection.vendor}; {n_studies} studies x {n_trials} trials "
        f"= {n_studies * n_trials} trials, built in {time.perf_counter() - began:.1f} s"
    )
    try:
        timed_ms(page, "/")  # the process's imports and first queries, outside the figures
        first = timed_ms(scraper, "/metrics")
        warm = statistics.median(timed_ms(scraper, "/metrics") for _ in range(repeats))
        add_trial(studies[0])
        one = timed_ms(scraper, "/metrics")
        for study in studies[1:11]:
            add_trial(study)
        ten = timed_ms(scraper, "/metrics")
        listing = statistics.median(timed_ms(page, "/") for _ in range(repeats))
        size = len(scraper.get("/metrics").content)
        print(f"  /metrics first scrape      {first:8.1f} ms")
        print(f"  /metrics warm (median)     {warm:8.1f} ms   {size / 1024:.0f} kB")
        print(f"  /metrics after +1 study    {one:8.1f} ms")
        print(f"  /metrics after +10 studies {ten:8.1f} ms")
        print(f"  studies list / (median)    {listing:8.1f} ms")
    finally:
        Study.objects.filter(pk__in=[s.pk for s in studies]).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # no request lines among the figures
    setup_django()
    run(args.studies, args.trials, args.repeats)


if __name__ == "__main__":
    main()
