# Optuna Hub in one image: the web server by default, a worker with
# `python manage.py qcluster`. compose.yaml runs it with PostgreSQL and Redis;
# README.md ("Production") lists the settings. tests/test_deployment.py checks
# this file statically and runs its commands outside a container.
FROM python:3.11-slim-bookworm

# HUB_NO_BOOTSTRAP: manage.py uses this Python instead of making a .venv.
# WEB_CONCURRENCY: gunicorn's worker processes (sync workers, one per CPU serve
# ask/tell best, docs/benchmarks.md).
# PROMETHEUS_MULTIPROC_DIR: each process writes its /metrics counters there and
# a scrape adds up all of them (as `manage.py start` does); /dev/shm is a fresh
# tmpfs at every container start, so no stale counters.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUB_NO_BOOTSTRAP=1 \
    HUB_VAR_DIR=/app/var \
    WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/dev/shm

WORKDIR /app

# pg_dump and pg_restore for `manage.py backup` / `restore` on PostgreSQL:
# bookworm's are version 15, as compose.yaml's server (pg_dump refuses a newer one).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

# Only the hub's part of requirements.txt (what comes before "# Tests"): no test
# runner, browser driver or benchmark in the image. PyTorch (the gp sampler) at
# the pinned version from its CPU-only index first: PyPI's build pulls in
# gigabytes of CUDA libraries. requirements.txt names the client by its path.
COPY requirements.txt ./
COPY client/ client/
RUN sed '/^# Tests/,$d' requirements.txt > /tmp/requirements-hub.txt \
 && pip install --index-url https://download.pytorch.org/whl/cpu \
        "$(grep '^torch==' /tmp/requirements-hub.txt)" \
 && pip install -r /tmp/requirements-hub.txt \
 && rm /tmp/requirements-hub.txt

COPY . .

# The code stays root's (read-only to the hub); var/ (static files, trial
# working directories) is the hub user's. The key given here only lets the
# settings load: no key file is baked into the image.
RUN useradd --system --create-home --home-dir /home/hub --user-group hub \
 && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
 && python -m compileall -q optuna_hub studies client \
 && mkdir -p var/trials \
 && chown -R hub:hub var

USER hub
EXPOSE 8000

# slim has no curl. The Host header is the first of ALLOWED_HOSTS (Django
# refuses others); HUB_HTTPS does not redirect /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; host = os.environ.get('ALLOWED_HOSTS', 'localhost').split(',')[0].strip().lstrip('*.') or 'localhost'; u.urlopen(u.Request('http://127.0.0.1:8000/healthz', headers={'Host': host}), timeout=4)"]

# The worker tmp dir in memory: gunicorn's heartbeat files on an overlay
# filesystem can stall workers.
CMD ["gunicorn", "optuna_hub.wsgi", "--bind", "0.0.0.0:8000", "--timeout", "300", "--no-control-socket", "--worker-tmp-dir", "/dev/shm"]
