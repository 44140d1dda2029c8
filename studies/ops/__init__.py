"""Operations (issue #13): health checks, Prometheus metrics, request / job logs, backups.

- ``health``: the checks behind /healthz, /readyz and ``manage.py hub_status``;
- ``clusters``: the django-q2 worker clusters that are alive, and the broker, bounded in time;
- ``metrics``: what /metrics exposes, and who may read it;
- ``logs``: request ids, the request log line and the JSON log format;
- ``backup``: backups of the database while the hub runs, and restores.

Nothing here may import the views or the API: they call it (settings load ``logs``
before the apps are ready, so it imports nothing of the hub).
"""
