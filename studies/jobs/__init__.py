"""Managed optimization jobs: the hub runs N trials of a study on django-q2 workers.

django-q2 only delivers work. It has no cancel, the ORM broker delivers a task
again when its worker died (after ``Q_CLUSTER["retry"]`` seconds) and the Redis
broker loses it. So the Job row is the truth and every task is idempotent:

- A job of concurrency k has k slots (JobSlot). ``do_start_job`` (studies/actions.py)
  enqueues one task per slot; a task first leases its slot with a conditional UPDATE and keeps the
  lease by heartbeat, so a duplicate or re-delivered task finds it held and does
  nothing, and a task for a finished job does nothing at all.
- Durable mode: each slot runs ``study.optimize`` on a JobStorage, a DjangoStorage
  whose new trials are claimed for the job: under a lock on the job's row it
  counts the job's RUNNING + COMPLETE + PRUNED trials and refuses a trial beyond
  n_trials. Failed trials do not count, so they free their claim. Trials carry
  heartbeats; a trial whose worker died is failed once its heartbeat is older
  than the grace period and re-run with the same parameters.
- Memory mode: each slot runs on Optuna's InMemoryStorage seeded with the
  study's trials and owns a fixed share of n_trials; finished trials are
  written to the database in batches (every few seconds and at the end).
- Cancel is cooperative: ``job.cancel()`` sets the status; each slot checks it
  between trials (a heartbeat thread also watches it, and kills a running
  command objective).
- The watchdog (``check_jobs``) runs at the start of every task, every few
  seconds in every running task, once a minute as a django-q2 schedule and from
  ``manage.py hub_watchdog``: it re-enqueues slots whose worker died or whose
  task got lost, and fails a job whose workers keep dying, with the reason.
- Sharing the workers (``fair.py``): a user (a job's creator) has at most
  HUB_MAX_ACTIVE_JOBS_PER_USER active jobs (one more is a 429) and
  HUB_MAX_RUNNING_SLOTS_PER_USER running slots, and the jobs on a team's
  studies share the team's HUB_MAX_ACTIVE_JOBS_PER_TEAM and
  HUB_MAX_RUNNING_SLOTS_PER_TEAM. django-q2's queue is FIFO, so
  fairness is decided when a worker picks a slot up: a slot whose user or
  team is at the limit, or runs more slots than another user with a slot queued, is
  *parked* (``JobSlot.waiting``; its task ends, the worker takes the next one)
  and a running slot hands itself back to the end of the queue between trials
  when another user has waited with two running slots fewer. Parked slots are
  queued again by ``wake_slots`` (whenever a slot starts or stops, and with the
  watchdog), fewest running slots first.
- A delay: starts are ``delay`` apart across the job's slots. A wait up to
  HUB_DELAY_SLEEP_MAX is slept in the worker; a longer one parks the slot until
  its reserved start (``JobSlot.start_at``), so a sleeping job holds no worker;
  the watchdog queues it again when that time has come.
- Failures: a job without max_failed_trials fails after
  max(HUB_DEFAULT_MAX_FAILED_TRIALS, 2 x n_trials) failed trials, saying so,
  rather than retry an objective that always fails forever.

Where things are:

- ``options.py``: a job's options, validated all at once (the API and the page);
- ``base.py``: the shared rules (limits, what counts, finishing a job, exceptions);
- ``tasks.py``: the django-q2 task, how slots are queued, and the watchdog;
- ``fair.py``: per-user limits, fair order, parked slots and why a job waits;
- ``runner.py``: a slot's lease, heartbeat, delay, timeout and stopping;
- ``modes.py``: the durable and the memory run of a slot;
- ``job_storage.py``: the DjangoStorage that claims trials for a job.
"""
