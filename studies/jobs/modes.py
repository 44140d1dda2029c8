"""The two ways a slot runs trials: durable (every trial written as it happens) and memory."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import optuna
from django.db import transaction
from django.db.models import F
from optuna.trial import FrozenTrial, TrialState

from studies.jobs.base import (
    CLAIMED,
    COUNTED,
    FINISHED,
    JobFull,
    SlotLost,
    counted_trials,
    finish,
    flush_interval,
    grace_period,
    heartbeat_interval,
    objective_of,
    worker_name,
)
from studies.jobs.job_storage import JobStorage
from studies.jobs.stopping import target_reached
from studies.models import Job, JobSlot, JobTrial, Study, Trial
from studies.storage import DjangoStorage, optuna_study_for

if TYPE_CHECKING:
    from studies.jobs.runner import SlotRunner


def job_optuna_study(study: Study, storage: Any) -> optuna.Study:
    """The study on ``storage``, its sampler built for the space the objective samples."""
    return optuna_study_for(study, storage, objective_of(study).space_for(study.search_space))


class DurableRun:
    """Every trial is written as it happens; concurrent slots share the database."""

    def __init__(self, runner: SlotRunner) -> None:
        self.runner = runner
        job = runner.job
        self.storage = JobStorage(
            job.pk,
            runner.slot.index,
            heartbeat_interval=heartbeat_interval(),
            grace_period=grace_period(),
        )
        self.storage.beats_elsewhere = True
        runner.beat_trials = self.storage.beat_running_trials
        self.study = job_optuna_study(job.study, self.storage)
        if runner.slot.index > 0 or runner.slot.n_starts > 1:
            # Slots of a seeded sampler must not all draw the same parameters.
            self.study.sampler.reseed_rng()

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        runner = self.runner
        self.storage.fail_stale(study._study_id)
        if trial.state == TrialState.FAIL and not trial.system_attrs.get("hub_stopped"):
            if not runner.after_failure(trial, 1):
                study.stop()
                return
        if trial.state in COUNTED and runner.stop_on_rule(trial):
            study.stop()
            return
        if (
            not runner.check_status()
            or runner.should_stop()
            or not runner.ready_for_next_trial(on_deadline=self.stop_for_timeout)
        ):
            study.stop()

    def stop_for_timeout(self) -> None:
        finish(self.runner.job.pk, Job.SUCCEEDED, "timeout")
        self.runner.stop_reason = "timeout"

    def run(self) -> None:
        runner = self.runner
        objective = runner.objective()
        # Trials a dead worker left running: fail them now and re-run them first.
        self.storage.fail_stale(self.study._study_id)
        if not runner.wait_for_start():
            return
        while not runner.stops_here():
            if runner.heartbeat.lost.is_set():
                raise SlotLost()
            if runner.deadline_passed():
                self.stop_for_timeout()
                return
            try:
                self.study.optimize(
                    objective,
                    timeout=runner.remaining(),
                    catch=(Exception,),
                    callbacks=[self.after_trial],
                )
            except JobFull:
                if not self.wait_for_claim():
                    return
                continue
            if runner.deadline_passed():
                self.stop_for_timeout()
                return
        if runner.heartbeat.lost.is_set():
            raise SlotLost()
        runner.stop_reason = runner.stop_reason or "stopped"

    def wait_for_claim(self) -> bool:
        """All trials are claimed: wait until one frees up (True) or the job is done."""
        runner = self.runner
        while not runner.should_stop():
            if runner.finish_if_done():
                return False
            if not runner.check_status():
                return False
            if runner.deadline_passed():
                self.stop_for_timeout()
                return False
            # A sibling's worker may have died with trials running.
            self.storage.fail_stale(self.study._study_id)
            job = Job.objects.get(pk=runner.job.pk)
            if job.retry_params or counted_trials(job.pk, CLAIMED) < job.n_trials:
                return True
            time.sleep(0.5)
        return False


class MemoryRun:
    """Trials run on InMemoryStorage and reach the database in batches.

    Each slot owns a share (quota) of n_trials. A batch is written in one
    transaction that also checks the slot's lease and never writes more counted
    trials than the quota, so the total is exact even if a slot is taken over.
    Trials not yet written when a worker dies are lost and run again.
    """

    def __init__(self, runner: SlotRunner) -> None:
        self.runner = runner
        job = runner.job
        self.db = DjangoStorage()
        self.study_id = job.study_id
        self.memory = optuna.storages.InMemoryStorage()
        directions = [optuna.study.StudyDirection[d.upper()] for d in job.study.directions]
        self.memory_study_id = self.memory.create_new_study(directions, job.study.name)
        self.study = job_optuna_study(job.study, self.memory)
        if runner.slot.index > 0 or runner.slot.n_starts > 1:
            self.study.sampler.reseed_rng()
        self.seen: set[int] = set()  # database trial ids already in memory
        self.pending: list[FrozenTrial] = []
        self.pending_failures = 0
        self.written = self.db_done()
        self.local_done = 0
        self.last_flush = time.monotonic()
        self.pull()

    def db_done(self) -> int:
        runner = self.runner
        return Trial.objects.filter(
            job_link__job_id=runner.job.pk, job_link__slot=runner.slot.index, state__in=COUNTED
        ).count()

    def pull(self) -> None:
        """Copy finished trials from the database (other slots, other clients) into memory."""
        for trial in self.db.get_all_trials(self.study_id, deepcopy=False, states=FINISHED):
            if trial._trial_id not in self.seen:
                self.seen.add(trial._trial_id)
                self.memory.create_new_trial(self.memory_study_id, template_trial=trial)

    def flush(self) -> None:
        runner = self.runner
        self.last_flush = time.monotonic()
        if not self.pending:
            self.pull()
            return
        job = runner.job
        with transaction.atomic():
            slot = JobSlot.objects.select_for_update().get(pk=runner.slot.pk)
            if slot.token != runner.token:
                self.pending.clear()
                raise SlotLost()
            room = slot.quota - self.db_done()
            links = []
            for trial in self.pending:
                if trial.state in COUNTED:
                    if room <= 0:
                        continue
                    room -= 1
                row = copy.copy(trial)
                row.system_attrs = {
                    **trial.system_attrs,
                    "hub_job_id": job.pk,
                    "hub_worker": worker_name(),
                }
                trial_id = self.db.create_new_trial(self.study_id, template_trial=row)
                links.append(JobTrial(job_id=job.pk, trial_id=trial_id, slot=slot.index))
                self.seen.add(trial_id)
            JobTrial.objects.bulk_create(links)
            if self.pending_failures:
                Job.objects.filter(pk=job.pk).update(n_failed=F("n_failed") + self.pending_failures)
        self.pending.clear()
        self.pending_failures = 0
        self.written = self.db_done()
        self.local_done = 0
        self.pull()
        # A plateau counts every slot's trials, so it is checked as a batch is written.
        runner.stop_on_rule()

    def quota_reached(self) -> bool:
        return self.written + self.local_done >= self.runner.slot.quota

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        runner = self.runner
        job = runner.job
        self.pending.append(trial)
        if trial.state in COUNTED:
            self.local_done += 1
        if target_reached(job, trial):
            self.flush()  # the trial that reached it is in the database first
            runner.stop_on_rule(trial)
            study.stop()
            return
        elif trial.state == TrialState.FAIL and not trial.system_attrs.get("hub_stopped"):
            self.pending_failures += 1
            if job.n_failed + self.pending_failures >= job.failure_limit:
                self.flush()
                if not runner.after_failure(trial, 0):
                    study.stop()
                    return
                job.refresh_from_db(fields=["n_failed"])
        if self.quota_reached() or runner.should_stop() or not runner.ready_for_next_trial():
            study.stop()
        if time.monotonic() - self.last_flush >= flush_interval():
            self.flush()

    def run(self) -> None:
        runner = self.runner
        objective = runner.objective()
        try:
            if not self.quota_reached() and runner.wait_for_start():
                while not (self.quota_reached() or runner.stops_here()):
                    if runner.deadline_passed():
                        break
                    self.study.optimize(
                        objective,
                        timeout=runner.remaining(),
                        catch=(Exception,),
                        callbacks=[self.after_trial],
                    )
        finally:
            if not runner.heartbeat.lost.is_set():
                self.flush()
        if runner.heartbeat.lost.is_set():
            raise SlotLost()
        if runner.deadline_passed() and finish(runner.job.pk, Job.SUCCEEDED, "timeout"):
            runner.stop_reason = "timeout"
            return
        if self.quota_reached():
            # This slot is done; the job is done when every slot is.
            runner.stop_reason = "quota"
            runner.release(finished=True)
            runner.finish_if_done()
