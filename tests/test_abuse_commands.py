"""Command objectives: an ordinary user stays inside what staff registered (issue #9).

Staff register a program with a search space; a user's study may narrow that
space, never leave it: no traversal or option in place of a config name, no
string in place of a number. The program sees only allowlisted variables, runs
in a fresh directory of its own, within resource limits, and as an unprivileged
user when HUB_COMMAND_USER is set. Each attack below is tried as alice, who is
not staff.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from django.conf import settings
from django.db import connection
from optuna.trial import TrialState

from studies.admin import CommandObjectiveForm
from studies.config.errors import ConfigError
from studies.jobs import tasks
from studies.models import CommandObjective, Job, Study
from studies.objectives.registry import check_command_objective, get_objective
from studies.storage import DjangoStorage, get_storage, optuna_study_for
from tests.conftest import client_for, wait_for
from tests.test_jobs_workers import WORKER_ENV

# Prints what it was given, then a result.
ECHO = "import sys; print('argv', *sys.argv[1:]); print('value 1')"
REGISTERED = {
    "cfg": {"type": "categorical", "choices": ["a.yaml", "b.yaml"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1, "log": True},
    "depth": {"type": "int", "low": 2, "high": 12, "step": 2},
}
ARGV = ["--config=/srv/configs/{cfg}", "--lr={lr}", "--depth={depth}"]
TRIAL_USER = "hubtrial"


def register(name: str, script: str, *args: str, **fields: Any) -> CommandObjective:
    """A command objective as staff register it: through the admin's own check."""
    fields.setdefault("search_space", REGISTERED)
    row = CommandObjective(name=name, argv=[sys.executable, "-c", script, *args], **fields)
    check_command_objective(row)
    row.save()
    return row


@pytest.fixture
def configs(db) -> str:
    register("configs", ECHO, *ARGV)
    return "configs"


def run(name: str, n_trials: int = 1) -> optuna.Study:
    """Trials of a command objective in this process, as a worker runs them."""
    info = get_objective(name)
    study = optuna.create_study(directions=info.directions)
    study.optimize(info.make_objective(None), n_trials=n_trials, catch=(Exception,))
    return study


def failure(name: str) -> tuple[str, str]:
    """Run one trial that must fail: the error it failed with, and the program's output."""
    info = get_objective(name)
    study = optuna.create_study(directions=info.directions)
    trial = study.ask()
    with pytest.raises(Exception) as e:
        info.make_objective(None)(trial)
    output = study.trials[0].system_attrs.get("hub_output_tail", "")
    return f"{type(e.value).__name__}: {e.value}", output


def choices(*values: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(values)}


def space(**changes: Any) -> dict[str, Any]:
    """The registered space with some parameters replaced (None: left out)."""
    result = {**REGISTERED, **changes}
    return {name: spec for name, spec in result.items() if spec is not None}


def tail(trial: optuna.trial.FrozenTrial) -> str:
    return trial.system_attrs.get("hub_output_tail", "")


ESCAPES = [
    ({"cfg": choices("../../../etc/passwd")}, "search_space.cfg.choices"),
    ({"cfg": choices("a.yaml/../../x")}, "search_space.cfg.choices"),
    ({"cfg": choices("/etc/passwd")}, "search_space.cfg.choices"),
    ({"cfg": choices("--evil")}, "search_space.cfg.choices"),
    ({"cfg": choices("c.yaml")}, "search_space.cfg.choices"),
    ({"cfg": choices("a.yaml", 1)}, "search_space.cfg.choices"),
    ({"lr": choices("0.01 --evil")}, "search_space.lr.type"),
    ({"lr": {"type": "float", "low": 1e-4, "high": 10}}, "search_space.lr.high"),
    ({"depth": {"type": "int", "low": 2, "high": 12}}, "search_space.depth.step"),
    ({"depth": {"type": "int", "low": 3, "high": 11, "step": 2}}, "search_space.depth.low"),
    ({"evil": {"type": "categorical", "choices": ["x"]}}, "search_space.evil"),
]


@pytest.mark.parametrize(("changes", "field"), ESCAPES)
def test_creating_a_study_whose_space_leaves_the_registered_one_is_a_400_naming_it(
    api, configs, changes, field
):
    body = {"name": "escape", "objective": configs, "search_space": space(**changes)}
    response = api.post("/api/studies/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not Study.objects.filter(name="escape").exists()


def test_the_messages_say_what_was_refused_and_why(api, configs):
    traversal = {"cfg": choices("../../../etc/passwd")}
    body = {"name": "escape", "objective": configs, "search_space": space(**traversal)}
    errors = api.post("/api/studies/", body, format="json").json()
    assert "'..' path segment" in errors["search_space.cfg.choices"][0]
    body["search_space"] = space(lr=choices("0.01 --evil"))
    errors = api.post("/api/studies/", body, format="json").json()
    assert errors["search_space.lr.type"] == ["must be float, as configs registers it"]


def test_patching_a_study_to_a_traversal_or_a_string_for_a_number_is_a_400(api, configs):
    response = api.post("/api/studies/", {"name": "mine", "objective": configs}, format="json")
    assert response.status_code == 201, response.json()
    url = f"/api/studies/{response.json()['id']}/"
    for changes, field in [
        ({"cfg": choices("../../../etc/passwd")}, ".cfg.choices"),
        ({"lr": choices("0.01 --evil")}, ".lr.type"),
    ]:
        response = api.patch(url, {"search_space": space(**changes)}, format="json")
        assert response.status_code == 400, response.json()
        assert f"search_space{field}" in response.json()
    assert Study.objects.get(name="mine").search_space == {}


def test_a_study_cannot_switch_to_a_command_its_space_escapes(api, configs):
    evil = space(cfg=choices("../../../etc/passwd"))
    response = api.post("/api/studies/", {"name": "mine", "search_space": evil}, format="json")
    assert response.status_code == 201, response.json()  # no objective: an ask/tell study
    url = f"/api/studies/{response.json()['id']}/"
    response = api.patch(url, {"objective": configs}, format="json")
    assert response.status_code == 400
    assert "search_space.cfg.choices" in response.json()


def test_a_job_on_a_study_whose_stored_space_escapes_is_a_400_and_starts_nothing(
    api, alice, configs
):
    # A row written before these checks, or behind the API's back.
    evil = space(cfg=choices("../../../etc/passwd"))
    study = Study.objects.create(
        name="old", owner=alice, directions=["minimize"], objective=configs, search_space=evil
    )
    response = api.post(f"/api/studies/{study.pk}/jobs/", {"n_trials": 1}, format="json")
    assert response.status_code == 400, response.json()
    assert "search_space.cfg.choices" in response.json()
    assert not Job.objects.exists()


def test_a_space_inside_the_registered_one_is_accepted_and_its_values_reach_the_program(
    transactional_db, api, alice
):
    register("configs", ECHO, *ARGV)
    narrow = space(
        cfg=choices("b.yaml"),
        lr={"type": "float", "low": 0.01, "high": 0.1},
        depth={"type": "int", "low": 4, "high": 8, "step": 4},
    )
    body = {"name": "narrow", "objective": "configs", "search_space": narrow}
    response = api.post("/api/studies/", body, format="json")
    assert response.status_code == 201, response.json()
    study_id = response.json()["id"]
    response = api.post(f"/api/studies/{study_id}/jobs/", {"n_trials": 2}, format="json")
    assert response.status_code == 202, response.json()
    tasks.run_job_slot(response.json()["id"], 0)
    trials = Study.objects.get(pk=study_id).trials.order_by("number")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for row in trials:
        trial = get_storage().get_trial(row.pk)
        assert f"--config=/srv/configs/b.yaml --lr={trial.params['lr']!r}" in tail(trial)
        assert 0.01 <= trial.params["lr"] <= 0.1 and trial.params["depth"] in (4, 8)


def test_a_value_outside_the_registered_space_never_reaches_the_program(
    transactional_db, api, alice
):
    # Enqueued trials are not sampled: Optuna only warns about a value out of range.
    register("configs", ECHO, *ARGV)
    response = api.post("/api/studies/", {"name": "q", "objective": "configs"}, format="json")
    study = Study.objects.get(pk=response.json()["id"])
    optuna_study_for(study, DjangoStorage()).enqueue_trial(
        {"cfg": "a.yaml", "lr": 1000.0, "depth": 4}
    )
    response = api.post(f"/api/studies/{study.pk}/jobs/", {"n_trials": 1}, format="json")
    tasks.run_job_slot(response.json()["id"], 0)
    first = get_storage().get_trial(study.trials.get(number=0).pk)
    assert first.state == TrialState.FAIL
    assert "lr=1000.0 is outside the registered range" in first.system_attrs["hub_error"]
    assert "argv" not in tail(first)  # the program never started


def test_staff_register_unsafe_string_choices_only_by_allowing_them(db):
    values = {
        "name": "flags",
        "argv": json.dumps(["python3", "train.py", "{mode}"]),
        "directions": json.dumps(["minimize"]),
        "search_space": json.dumps({"mode": {"type": "categorical", "choices": ["--fast"]}}),
        "timeout": 60,
        "enabled": True,
    }
    form = CommandObjectiveForm(values)
    assert not form.is_valid()
    assert "mode.choices: '--fast' begins with '-'" in " ".join(form.errors["search_space"])
    assert CommandObjectiveForm({**values, "allow_unsafe_strings": True}).is_valid()


def test_a_study_of_a_command_that_allows_unsafe_strings_gets_only_the_registered_ones(api, db):
    flags = {"mode": {"type": "categorical", "choices": ["--fast", "--slow"]}}
    register("flags", ECHO, "{mode}", search_space=flags, allow_unsafe_strings=True)
    for choices, status in [(["--fast"], 201), (["--fast", "--rm"], 400)]:
        body = {
            "name": f"flags-{status}",
            "objective": "flags",
            "search_space": {"mode": {"type": "categorical", "choices": choices}},
        }
        response = api.post("/api/studies/", body, format="json")
        assert response.status_code == status, response.json()


def test_a_study_keeps_the_registered_conditions_of_a_command(api, db):
    conditional = {
        "booster": choices("gbtree", "dart"),
        "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": ["dart"]}},
    }
    register("boost", ECHO, "--rate-drop={rate_drop}", search_space=conditional)
    unconditional = {**conditional, "rate_drop": {"type": "float", "low": 0, "high": 1}}
    only_dart = {**conditional, "booster": choices("dart")}
    body = {"name": "mine", "objective": "boost", "search_space": unconditional}
    response = api.post("/api/studies/", body, format="json")
    assert response.status_code == 400
    assert "search_space.rate_drop.when" in response.json()
    body["search_space"] = only_dart
    response = api.post("/api/studies/", body, format="json")
    assert response.status_code == 201, response.json()


def test_staff_must_register_the_space_a_command_takes(db):
    row = CommandObjective(name="open_ended", argv=["true"], search_space={})
    with pytest.raises(ConfigError, match="search_space: is required"):
        check_command_objective(row)


# What the program sees and may use

ENV_DUMP = "import json, os; print('env', json.dumps(dict(os.environ))); print('value 1')"


def test_the_program_sees_only_allowlisted_variables(db, monkeypatch):
    secrets = {
        "PGPASSWORD": "secret",
        "HUB_ADMIN_PASSWORD": "admin-secret",
        "AWS_SECRET_ACCESS_KEY": "cloud-secret",
        "GOOGLE_APPLICATION_CREDENTIALS": "/root/creds.json",
        "SECRET_KEY": "django-secret",
    }
    for name, value in {**secrets, "WANDB_API_KEY": "passed", "LANG": "C.UTF-8"}.items():
        monkeypatch.setenv(name, value)
    register(
        "env_dump",
        ENV_DUMP,
        environment={"GREETING": "hi"},
        pass_environment=["WANDB_API_KEY"],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    trial = run("env_dump").trials[0]
    assert trial.state == TrialState.COMPLETE, trial.system_attrs
    line = next(x for x in tail(trial).splitlines() if x.startswith("env "))
    env = json.loads(line.removeprefix("env "))
    assert not set(secrets) & set(env)
    assert not [v for v in env.values() if "secret" in v]
    assert env["WANDB_API_KEY"] == "passed" and env["GREETING"] == "hi"
    assert env["LANG"] == "C.UTF-8" and "PATH" in env
    trial_vars = {"HUB_PARAMS", "HUB_PARAM_X", "HUB_STUDY", "HUB_TRIAL_NUMBER", "HUB_JOB_ID"}
    assert {k for k in env if k.startswith("HUB_")} == trial_vars


def test_staff_cannot_pass_the_hubs_own_secrets_to_a_program(db):
    for names in (["SECRET_KEY"], ["DATABASE_URL"], ["HUB_*"], ["not a name"]):
        row = CommandObjective(
            name="leaky", argv=["true"], search_space=REGISTERED, pass_environment=names
        )
        with pytest.raises(ConfigError, match="pass_environment"):
            check_command_objective(row)


def test_a_command_runs_in_a_fresh_directory_of_its_own_removed_afterwards(db):
    script = (
        "import os\n"
        "print('cwd', os.getcwd(), os.listdir('.'))\n"
        "print('relative secret', os.path.exists('var/secret_key'))\n"
        "open('scratch', 'w').write('mine')\n"
        "print('value 1')\n"
    )
    register("where", script, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    study = run("where", 2)
    dirs = []
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE, trial.system_attrs
        lines = tail(trial).splitlines()
        cwd, listing = lines[0].removeprefix("cwd ").split(" ", 1)
        assert listing == "[]" and lines[1] == "relative secret False"
        assert Path(cwd).parent == Path(settings.HUB_COMMAND_WORK_DIR)
        assert not Path(cwd).exists()
        dirs.append(cwd)
    assert dirs[0] != dirs[1]


def test_a_trial_directory_a_dead_worker_left_is_removed_when_the_next_trial_starts(db):
    root = Path(settings.HUB_COMMAND_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True)
    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid no process has now, as a SIGKILLed worker's
    host = socket.gethostname()
    dead = root / f"trial-{host}-{finished.pid}-left"
    alive = root / f"trial-{host}-{os.getppid()}-running"
    other_host = root / f"trial-{host}x-{finished.pid}-elsewhere"
    for path in (dead, alive, other_host):
        path.mkdir()
    try:
        register("next", ECHO, search_space={"x": {"type": "float", "low": 0, "high": 1}})
        assert run("next").trials[0].state == TrialState.COMPLETE
        assert not dead.exists() and alive.exists() and other_host.exists()
    finally:
        for path in (dead, alive, other_host):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("limits", "script", "output", "error"),
    [
        (
            {"HUB_COMMAND_CPU_SECONDS": 1},
            "print('spinning', flush=True)\nwhile True: pass",
            "spinning",
            "killed by SIGXCPU: it used its 1 s of CPU time",
        ),
        (
            {"HUB_COMMAND_MAX_FILES": 32},
            "files = [open('/dev/null') for _ in range(100)]\nprint('value 1')",
            "Too many open files",
            "exited with code 1",
        ),
        (
            {"HUB_COMMAND_MEMORY_MB": 64},
            "data = bytearray(512 * 2**20)\nprint('value 1')",
            "MemoryError",
            "exited with code 1",
        ),
    ],
)
def test_a_command_past_a_resource_limit_fails_its_trial(
    db, settings, limits, script, output, error
):
    for name, value in limits.items():
        setattr(settings, name, value)
    register("hungry", script, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    message, tail_text = failure("hungry")
    assert message == f"CommandError: {error}"
    assert output in tail_text


def trial_user() -> pwd.struct_passwd:
    """The unprivileged user programs run as in these tests, created when missing."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs a worker running as root")
    try:
        return pwd.getpwnam(TRIAL_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("useradd is not installed, so the test cannot create its user")
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TRIAL_USER],
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by another run
        pytest.skip(f"useradd {TRIAL_USER} failed: {result.stderr.strip()}")
    return pwd.getpwnam(TRIAL_USER)


def test_as_hub_command_user_a_command_cannot_read_the_secret_key_or_the_database(db, settings):
    user = trial_user()
    settings.HUB_COMMAND_USER = TRIAL_USER
    secret_key = Path(settings.VAR_DIR) / "secret_key"
    # On PostgreSQL there is no database file; the secret key is still there.
    sqlite = connection.vendor == "sqlite"
    database = Path(connection.settings_dict["NAME"]) if sqlite else secret_key
    assert secret_key.exists() and database.exists()
    if sqlite:
        database.chmod(0o644)  # as SQLite creates it under the usual umask
    script = (
        'echo "ids $(id -u) $(id -G)"\n'
        'echo "cwd $(pwd)"\n'
        'for f in "$@"; do if cat "$f" >/dev/null 2>&1; then echo "read $f"; '
        'else echo "denied $f"; fi; done\n'
        "echo mine > scratch && echo wrote\n"
        "echo value 1\n"
    )
    row = CommandObjective(
        name="as_user",
        # A system program: the hub's own interpreter may not be readable by that user.
        argv=["/bin/sh", "-c", script, "sh", str(secret_key), str(database)],
        search_space={"x": {"type": "float", "low": 0, "high": 1}},
    )
    check_command_objective(row)
    row.save()
    trial = run("as_user").trials[0]
    assert trial.state == TrialState.COMPLETE, trial.system_attrs
    lines = tail(trial).splitlines()
    assert lines[0] == f"ids {user.pw_uid} {user.pw_gid}"  # no supplementary groups
    assert Path(lines[1].removeprefix("cwd ")).parent == Path(settings.HUB_COMMAND_WORK_DIR)
    assert f"denied {secret_key}" in lines and f"denied {database}" in lines
    assert "wrote" in lines
    assert not stat.S_IMODE(database.stat().st_mode) & 0o077


def test_a_hub_command_user_the_worker_cannot_become_fails_the_trial_clearly(db, settings):
    settings.HUB_COMMAND_USER = "no-such-user-here"
    register("nobody", ECHO, search_space={"x": {"type": "float", "low": 0, "high": 1}})
    message, output = failure("nobody")
    assert message == (
        "CommandError: HUB_COMMAND_USER='no-such-user-here' names no user on this machine"
    )
    assert output == ""  # nothing ran


# The first trial asks for far more memory than the limit; the others for none.
HOG = (
    "import os, sys\n"
    "if os.environ['HUB_TRIAL_NUMBER'] == '0':\n"
    "    data = bytearray(512 * 2**20)\n"
    "print('value', float(sys.argv[1]) ** 2)\n"
)


@pytest.mark.slow
def test_a_command_past_the_memory_limit_fails_its_trial_not_the_worker(start_qcluster, alice):
    cluster = start_qcluster(**WORKER_ENV, HUB_COMMAND_MEMORY_MB="64")
    register("hog", HOG, "{x}", search_space={"x": {"type": "float", "low": -1, "high": 1}})
    study = Study.objects.create(name="hog", owner=alice, directions=["minimize"], objective="hog")
    response = client_for(alice).post(
        f"/api/studies/{study.pk}/jobs/", {"n_trials": 2}, format="json"
    )
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])

    def done() -> bool:
        job.refresh_from_db()
        return not job.is_active

    wait_for(done, 90, "the job to finish")
    assert job.status == "succeeded", job.error
    progress = job.progress()
    assert progress["complete"] == 2 and progress["failed"] == 1
    trials = [get_storage().get_trial(t.pk) for t in study.trials.order_by("number")]
    assert trials[0].state == TrialState.FAIL and "MemoryError" in tail(trials[0])
    workers = {t.system_attrs["hub_worker"] for t in trials}
    assert len(workers) == 1  # the same worker ran the trials after the failed one
    os.kill(int(workers.pop().rsplit(":", 1)[1]), 0)  # and is still alive
    assert cluster.poll() is None
