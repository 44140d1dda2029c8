"""Sharing the workers between users: limits, fair order, parked slots, why a job waits.

A user is a job's ``created_by`` (staff too: an operator raises the settings
rather than being exempt, so a script under a staff account cannot take every
worker either). Counts are over active jobs' unfinished slots:

- running: leased, heartbeat fresh;
- queued: not leased, ``waiting`` empty (a task for it is in the broker's queue);
- parked: not leased, ``waiting`` set, no task: nothing runs until ``wake_slots``
  queues it again.

The rules, all checked when a worker picks up a slot (``admission``) or by the
slot's own heartbeat thread (``should_yield``):

- a user runs at most HUB_MAX_RUNNING_SLOTS_PER_USER slots, and the jobs on one
  team's studies at most HUB_MAX_RUNNING_SLOTS_PER_TEAM; a slot picked up
  beyond either is parked LIMIT;
- a slot whose user runs more slots than another user with a queued slot is
  parked TURN, so the worker takes the next task (FIFO) and the other user's
  slot gets a worker first;
- a running slot yields its worker between trials (hands itself back to the end
  of the queue) when another user's slot has waited a while with at least two
  running slots fewer: fair to within one slot, with no ping-pong;
- a delayed slot (see runner.py) is parked DELAY until its start time.

``wake_slots`` runs whenever a slot starts or stops and with the watchdog; it
queues parked slots that may now run, users with the fewest running slots first.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db.models import Count, F, QuerySet
from django.utils import timezone

from studies.jobs.base import (
    grace_period,
    heartbeat_interval,
    max_running_slots,
    max_team_running_slots,
)
from studies.models import Job, JobSlot

Owner = int | None  # a job's created_by_id


def active_slots() -> QuerySet[JobSlot]:
    return JobSlot.objects.filter(job__status__in=Job.ACTIVE, finished=False)


def running_slots(now: datetime) -> QuerySet[JobSlot]:
    stale = now - timedelta(seconds=grace_period())
    return active_slots().exclude(token="").filter(heartbeat__gte=stale)


def count_by(slots: QuerySet[JobSlot], column: str) -> Counter:
    rows = slots.values(column).annotate(n=Count("id")).values_list(column, "n")
    return Counter(dict(rows))


def running_by_owner(now: datetime) -> Counter[Owner]:
    return count_by(running_slots(now), "job__created_by_id")


def running_by_team(now: datetime) -> Counter[int | None]:
    return count_by(running_slots(now), "job__study__team_id")


def team_is_full(team_id: int | None, running: Counter[int | None]) -> bool:
    return team_id is not None and running[team_id] >= max_team_running_slots()


def queued_slots() -> list[tuple[Owner, datetime | None, int]]:
    """(owner, enqueued_at, job id) of every queued slot."""
    rows = active_slots().filter(token="", waiting="")
    return list(rows.values_list("job__created_by_id", "enqueued_at", "job_id"))


def admission(job: Job, now: datetime) -> str:
    """Whether a slot of ``job`` may start now: "" if it may, else LIMIT or TURN.

    The caller holds the owner's and the team's row locks (runner.py), so two
    slots of one user or team starting at once cannot both pass the limit.
    """
    owner, team = job.created_by_id, job.study.team_id
    running = running_by_owner(now)
    mine = running[owner]
    if mine >= max_running_slots():
        return JobSlot.LIMIT
    if team is not None and team_is_full(team, running_by_team(now)):  # a team's job only
        return JobSlot.LIMIT
    for other, _, _ in queued_slots():
        if other != owner and running[other] < mine:
            return JobSlot.TURN
    return ""


def should_yield(job: Job, now: datetime) -> bool:
    """Whether a running slot of ``job`` should give its worker to a waiting user.

    Only for a slot that has waited longer than a free worker takes to pick a
    task up (so no worker is free), and a user with two running slots fewer:
    after the swap the two differ by at most one, and neither yields back.
    """
    owner = job.created_by_id
    running = running_by_owner(now)
    mine = running[owner]
    if mine < 2:
        return False
    waited = now - timedelta(seconds=max(2, 2 * heartbeat_interval()))
    return any(
        other != owner and running[other] <= mine - 2 and queued_at and queued_at < waited
        for other, queued_at, _ in queued_slots()
    )


def wake_slots(now: datetime | None = None) -> list[JobSlot]:
    """Take parked slots that may run now out of parking; the caller enqueues them.

    Each is taken with a conditional UPDATE, so callers running at once never
    queue one slot twice. A due DELAY slot whose user is at the limit is parked
    LIMIT instead, which is then why it waits.
    """
    now = now or timezone.now()
    parked = active_slots().filter(token="").exclude(waiting="")
    parked = list(parked.select_related("job__study"))
    if not parked:
        return []
    running = running_by_owner(now)
    queued = queued_slots()
    busy = running + Counter(owner for owner, _, _ in queued)
    team_busy: Counter[int | None] = Counter()
    if any(slot.job.study.team_id is not None for slot in parked):  # only teams' slots need it
        in_queue = active_slots().filter(token="", waiting="")
        team_busy = running_by_team(now) + count_by(in_queue, "job__study__team_id")
    limit = max_running_slots()
    parked.sort(key=lambda s: (running[s.job.created_by_id], s.enqueued_at or now, s.pk))
    woken = []
    for slot in parked:
        owner, team = slot.job.created_by_id, slot.job.study.team_id
        if slot.waiting == JobSlot.DELAY and slot.start_at and slot.start_at > now:
            continue
        if busy[owner] >= limit or team_is_full(team, team_busy):
            if slot.waiting == JobSlot.DELAY:
                JobSlot.objects.filter(pk=slot.pk, token="", waiting=JobSlot.DELAY).update(
                    waiting=JobSlot.LIMIT
                )
            continue
        if slot.waiting == JobSlot.TURN and any(
            other != owner and running[other] < running[owner] for other, _, _ in queued
        ):
            continue
        took = JobSlot.objects.filter(pk=slot.pk, token="", waiting=slot.waiting).update(
            waiting="", enqueued_at=now, n_enqueued=F("n_enqueued") + 1
        )
        if took:
            busy[owner] += 1
            team_busy[team] += 1
            woken.append(slot)
    return woken


# Why a job waits (the API's waiting_reason, the study page)


def waiting_reason(job: Job, now: datetime | None = None) -> str:
    """Why an active job runs no trial now, for its user; "" when a slot of it runs."""
    if not job.is_active:
        return ""
    now = now or timezone.now()
    stale = now - timedelta(seconds=grace_period())
    slots = [slot for slot in job.slots.all() if not slot.finished]
    if not slots or any(s.token and s.heartbeat and s.heartbeat >= stale for s in slots):
        return ""
    waiting = {slot.waiting for slot in slots}
    if JobSlot.LIMIT in waiting:
        running = running_by_owner(now)[job.created_by_id]
        if running < max_running_slots() and job.study.team_id is not None:
            team_running = running_by_team(now)[job.study.team_id]
            return (
                f"waiting: team {job.study.team.name} has {team_running} running "
                f"{plural(team_running, 'slot')} (limit {max_team_running_slots()})"
            )
        return (
            f"waiting: you have {running} running {plural(running, 'slot')} "
            f"(limit {max_running_slots()})"
        )
    delayed = [s.start_at for s in slots if s.waiting == JobSlot.DELAY and s.start_at]
    if delayed and len(delayed) == len(slots):
        start = timezone.localtime(min(delayed))
        return f"next trial at {start:%H:%M:%S} (delay)"
    return f"waiting for a free worker, {ahead_of(job, slots, now)} ahead"


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def ahead_of(job: Job, slots: list[JobSlot], now: datetime) -> int:
    """Other jobs' queued slots that go first: fewer running slots, or queued earlier."""
    running = running_by_owner(now)
    mine = running[job.created_by_id]
    since = (min((s.enqueued_at for s in slots if s.enqueued_at), default=now), job.pk)
    return sum(
        1
        for owner, queued_at, job_id in queued_slots()
        if job_id != job.pk
        and (
            running[owner] < mine or (running[owner] == mine and (queued_at or now, job_id) < since)
        )
    )
