"""The browser pages: server-rendered templates, charts fetched as JSON one by one.

A user sees the studies they may read (``Study.objects.readable_by``; any other
is a 404, as if it did not exist) and changes, runs, cancels or deletes those
they may write (``Study.can_edit``; the actions check it again). The rules are
in ``studies/models/team.py``.
State changes go through ``studies.actions``; how values read (numbers,
durations, search-space entries) is in the ``hub`` template tags
(``studies/templatetags/hub.py``), so the views pass objects and plain data.

The map of pages, by module:

- ``studies.py``: the studies list (search, sort, pages), the new-study and
  edit forms, deleting a study;
- ``study_page.py``: a study's page (summary or Pareto set, jobs, charts,
  trials table, activity, configuration), the trials table alone and ``study_status``,
  the small JSON view the page polls; it refetches the table and charts only
  when the trial-count signature changes;
- ``trials.py``: a trial's page (values, parameters, intermediate values,
  attributes, command output);
- ``jobs.py``: the run form (starts a job) and cancelling a job;
- ``charts.py``: one chart's JSON, and the page comparing studies;
- ``tokens.py``: the user's API tokens (create with a scope and a team, list, revoke);
- ``teams.py``: the user's teams (and creating one), a team's page, its members;
- ``ops.py``: ``/healthz``, ``/readyz`` and ``/metrics`` for operators (``studies.ops``);
- ``assets.py``: the hub's plotly.js bundle (``studies/vendor/``) and the client wheel;
- ``common.py``: what several pages share (the "only the owner" page).
"""
