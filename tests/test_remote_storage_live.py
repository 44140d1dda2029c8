"""HubStorage from a "remote machine": client processes without Django, a real gunicorn hub.

The client runs in a virtualenv that has Optuna, the hub's client (installed
with pip from the wheel the hub serves) and pytest, but not Django nor any
database driver; tests check that. Everything a test asserts about the hub's
side it reads from the test database the live server writes to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from importlib.metadata import distribution
from pathlib import Path

import pytest
from optuna.trial import TrialState
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from studies.client_package import build_wheel, wheel_name
from studies.models import ApiToken, Study, Trial
from studies.teams import do_add_member, do_create_team
from tests.conftest import BASE_DIR, run_suite_elsewhere, token_for, wait_for

pytestmark = pytest.mark.slow


def distributions_needed(names: list[str]) -> list:
    """The installed distributions ``names`` need, with everything they require."""
    found: dict[str, object] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        dist = found[name] = distribution(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


@pytest.fixture(scope="session")
def client_python(tmp_path_factory) -> Path:
    """A virtualenv with Optuna, urllib3, pytest and the client wheel, and no Django."""
    root = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # Optuna and its requirements as installed here, linked rather than downloaded.
    for dist in distributions_needed(["optuna", "urllib3", "pytest"]):
        for top in {path.parts[0] for path in dist.files or [] if path.parts[0] != ".."}:
            target = site / top
            if not target.exists():
                target.symlink_to(Path(dist.locate_file(top)))
    wheel = root / wheel_name()
    wheel.write_bytes(build_wheel())
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], check=True)
    check = "import optuna, optuna_hub_client; import django"
    result = subprocess.run([python, "-c", check], capture_output=True, text=True)
    assert "No module named 'django'" in result.stderr, result.stderr
    return python


def client_env(url: str, token: str) -> dict[str, str]:
    # Nothing of the hub's environment: no settings module, no database URL.
    return {"PATH": os.environ["PATH"], "OPTUNA_HUB_URL": url, "OPTUNA_HUB_TOKEN": token}


def run_client(python: Path, url: str, token: str, script: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [python, "-c", textwrap.dedent(script)],
        env=client_env(url, token),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_the_hub_serves_the_client_wheel_and_pip_installs_it(hub_server, tmp_path):
    url = f"{hub_server}/client/{wheel_name()}"
    with urllib.request.urlopen(url) as response:
        assert response.read() == build_wheel()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(tmp_path), url],
        check=True,
    )  # fmt: skip
    assert (tmp_path / "optuna_hub_client" / "storage.py").exists()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{hub_server}/client/optuna_hub_client-0.1-py3-none-any.whl")
    assert missing.value.code == 404


def test_optunas_storage_suite_passes_against_a_live_hub(hub_server, client_python, alice):
    # The suite deletes every study before each test: the hub holds only alice's.
    result = subprocess.run(
        [client_python, "-m", "pytest", "-q", "tests/test_conformance.py"],
        cwd=BASE_DIR / "client",
        env=client_env(hub_server, token_for(alice)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "failed" not in summary and "skipped" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 59, summary


def test_the_live_tests_pass_on_postgresql(postgres_url):
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("this whole run already uses PostgreSQL")
    files = [__file__, "tests/test_remote_storage.py"]
    run_suite_elsewhere([*files, "-k", "not postgresql"], DATABASE_URL=postgres_url)


FOUR_CLIENTS = """
    import optuna
    from optuna_hub_client import HubStorage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=HubStorage(),
                              sampler=optuna.samplers.TPESampler(n_startup_trials=5))
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2 + t.suggest_int("n", 0, 3),
                   n_trials=50)
"""


def test_four_clients_share_one_study(hub_server, client_python, alice, api, client):
    token = token_for(alice)
    run_client(client_python, hub_server, token, """
        import optuna
        from optuna_hub_client import HubStorage
        optuna.create_study(study_name="shared", storage=HubStorage())
    """)  # fmt: skip
    clients = [
        subprocess.Popen(
            [client_python, "-c", textwrap.dedent(FOUR_CLIENTS)],
            env=client_env(hub_server, token),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in clients:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    study = Study.objects.get(name="shared")
    numbers = sorted(study.trials.values_list("number", flat=True))
    assert numbers == list(range(200))
    assert set(study.trials.values_list("state", flat=True)) == {TrialState.COMPLETE}
    # The same trials as any other path shows them: the REST API and the study page.
    listed = api.get(f"/api/studies/{study.pk}/trials/", {"page_size": 1000}).json()
    assert listed["count"] == 200
    assert study.owner == alice
    client.force_login(alice)
    page = client.get(f"/studies/{study.pk}/")
    assert page.status_code == 200 and "200" in page.content.decode()
    chart = client.get(f"/studies/{study.pk}/charts/history.json")
    assert chart.status_code == 200 and chart.json()["figure"]["data"]


SEEDED = """
    import json, optuna
    from optuna_hub_client import HubStorage
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        n = trial.suggest_int("n", 1, 64, log=True)
        return (x - 1) ** 2 + {"a": 0, "b": 1, "c": 2}[kind] + n / 64

    runs = {}
    for name, storage in [("memory", optuna.storages.InMemoryStorage()), ("hub", HubStorage())]:
        study = optuna.create_study(storage=storage, study_name="seeded",
                                    sampler=optuna.samplers.TPESampler(seed=11, n_startup_trials=5))
        study.optimize(objective, n_trials=30)
        runs[name] = [t.params for t in study.trials]
    print(json.dumps(runs))
"""


def test_a_seeded_sampler_samples_what_it_samples_in_memory(hub_server, client_python, alice):
    runs = json.loads(run_client(client_python, hub_server, token_for(alice), SEEDED))
    assert len(runs["hub"]) == 30
    assert runs["hub"] == runs["memory"]
    stored = Trial.objects.filter(study__name="seeded").order_by("number")
    assert [trial.external_params() for trial in stored] == runs["hub"]


PRUNING = """
    import optuna
    from optuna_hub_client import HubStorage
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        slope = trial.suggest_float("slope", 0, 1)
        for step in range(10):
            trial.report(slope * (10 - step), step)  # as optuna-integration's callbacks do
            if trial.should_prune():
                raise optuna.TrialPruned()
        return slope

    study = optuna.create_study(study_name="pruned", storage=HubStorage(),
                                sampler=optuna.samplers.RandomSampler(seed=3),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    study.optimize(objective, n_trials=25)
"""


def test_pruning_works_through_the_hub(hub_server, client_python, alice):
    run_client(client_python, hub_server, token_for(alice), PRUNING)
    trials = Trial.objects.filter(study__name="pruned")
    states = set(trials.values_list("state", flat=True))
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = trials.filter(state=TrialState.PRUNED).first()
    assert 1 <= len(pruned.intermediate_values) < 10


SLEEPER = """
    import sys, time, optuna
    from optuna_hub_client import HubStorage
    storage = HubStorage(heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="killed", storage=storage)

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        print("started", flush=True)
        time.sleep(120)
        return 0.0

    study.optimize(objective, n_trials=1)
"""

RETRIER = """
    import optuna
    from optuna.storages import RetryFailedTrialCallback
    from optuna_hub_client import HubStorage
    storage = HubStorage(heartbeat_interval=1, grace_period=3,
                         failed_trial_callback=RetryFailedTrialCallback(max_retry=1))
    study = optuna.load_study(study_name="killed", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
"""


def test_a_killed_clients_trial_is_failed_and_run_again(hub_server, client_python, alice):
    token = token_for(alice)
    sleeper = subprocess.Popen(
        [client_python, "-c", textwrap.dedent(SLEEPER)],
        env=client_env(hub_server, token),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sleeper.stdout.readline().strip() == "started"
        wait_for(
            lambda: Trial.objects.filter(study__name="killed", heartbeat__isnull=False).exists(),
            30,
            "a heartbeat from the sleeping client",
        )
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    killed = Trial.objects.get(study__name="killed", number=0)
    assert killed.state == TrialState.RUNNING
    time.sleep(4)  # past the grace period
    run_client(client_python, hub_server, token, RETRIER)
    killed.refresh_from_db()
    assert killed.state == TrialState.FAIL
    again = Trial.objects.get(study__name="killed", number=1)
    assert again.state == TrialState.COMPLETE
    assert again.system_attrs["failed_trial"] == 0
    assert "x" in killed.params  # held back only briefly: it reached the hub before the kill
    assert again.params == killed.params


ERRORS = """
    import optuna
    from optuna_hub_client import HubPermissionError, HubStorage
    storage = HubStorage()
    try:
        optuna.load_study(study_name="nobody", storage=storage)
    except KeyError as e:
        print("missing:", e)
    study = optuna.load_study(study_name="alices", storage=storage)
    try:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    except HubPermissionError as e:
        print("refused:", e)
    print("reads:", len(study.trials))
"""


def test_another_users_client_reads_but_cannot_write(hub_server, client_python, alice, bob):
    run_client(client_python, hub_server, token_for(alice), """
        import optuna
        from optuna_hub_client import HubStorage
        study = optuna.create_study(study_name="alices", storage=HubStorage())
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    """)  # fmt: skip
    out = run_client(client_python, hub_server, token_for(bob), ERRORS)
    assert "missing: 'No such study nobody.'" in out
    assert "refused: You may not change study 'alices': it is not yours." in out
    assert "reads: 2" in out
    assert Trial.objects.filter(study__name="alices").count() == 2


def test_a_wrong_token_fails_at_the_first_call(hub_server, client_python):
    result = subprocess.run(
        [client_python, "-c", "import optuna; from optuna_hub_client import HubStorage; "
         "optuna.create_study(study_name='x', storage=HubStorage())"],
        env=client_env(hub_server, "ohub_not-a-token"),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "optuna_hub_client._http.HubPermissionError: the hub refused the token: Invalid token."
    )
    assert not Study.objects.exists()


def test_an_unreachable_hub_is_retried_then_named(client_python, tmp_path):
    # Nothing listens on port 9 of loopback: every attempt is refused at once.
    result = subprocess.run(
        [client_python, "-c", "from optuna_hub_client import HubStorage; "
         "HubStorage('http://127.0.0.1:9', 'k', retries=2, backoff=0.01).get_all_studies()"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "HubError: cannot reach the hub at http://127.0.0.1:9" in result.stderr


BATCHED = """
    import time, optuna
    from optuna_hub_client import HubStorage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = HubStorage()
    requests = []
    send = storage._connection.request  # counted, then sent as ever

    def counted(method, *args, **kwargs):
        requests.append(method)
        return send(method, *args, **kwargs)

    storage._connection.request = counted
    study = optuna.create_study(
        study_name="batched", storage=storage, sampler=optuna.samplers.TPESampler(seed=1)
    )

    def objective(trial):
        trial.set_user_attr("epochs", 3)
        for step in range(3):
            trial.report(step / 10, step)
        return trial.suggest_float("x", -1, 1) ** 2 + trial.suggest_int("n", 1, 9)

    study.optimize(objective, n_trials=12)  # the first distributions go at once
    before = len(requests)
    study.optimize(objective, n_trials=20)
    print("requests per trial:", (len(requests) - before) / 20)
    trial = study.ask()
    trial.suggest_float("x", -1, 1)
    trial.set_user_attr("phase", "training")
    print("suggested", flush=True)
    time.sleep(60)
"""


def test_an_optuna_trial_takes_two_requests_and_its_writes_reach_the_hub_soon(
    hub_server, client_python, alice
):
    client = subprocess.Popen(
        [client_python, "-c", textwrap.dedent(BATCHED)],
        env=client_env(hub_server, token_for(alice)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = client.stdout.readline()
        assert line.startswith("requests per trial:"), line
        # Two, and a few more if a slow moment outlasts the read-ahead window.
        assert float(line.split(":")[1]) <= 2.5, line
        assert client.stdout.readline().strip() == "suggested"
        running = Trial.objects.get(study__name="batched", number=32)
        wait_for(
            lambda: Trial.objects.get(pk=running.pk).user_attrs == {"phase": "training"},
            10,
            "the running trial's writes, within flush_after of being made",
        )
        assert "x" in Trial.objects.get(pk=running.pk).params
        assert client.poll() is None  # sent while the client sleeps, not at its exit
    finally:
        client.kill()
        client.wait()
    finished = Trial.objects.filter(study__name="batched", state=TrialState.COMPLETE)
    assert finished.count() == 32
    for trial in finished:
        assert set(trial.params) == {"x", "n"}
        assert trial.user_attrs == {"epochs": 3}
        assert trial.intermediate_values == {"0": 0.0, "1": 0.1, "2": 0.2}


def test_writes_held_back_are_sent_when_the_client_exits(hub_server, client_python, alice):
    run_client(client_python, hub_server, token_for(alice), """
        import optuna
        from optuna_hub_client import HubStorage
        study = optuna.create_study(study_name="exits", storage=HubStorage(flush_after=600))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("left", "before its tell")
    """)  # fmt: skip
    left = Trial.objects.get(study__name="exits", number=1)
    assert left.state == TrialState.RUNNING
    assert left.user_attrs == {"left": "before its tell"}
    assert "x" in left.params


HIDDEN = """
    import optuna
    from optuna_hub_client import HubPermissionError, HubStorage
    storage = HubStorage()
    print("listed:", sorted(optuna.get_all_study_names(storage=storage)))
    for name in ("secret", "nobody"):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError as e:
            print("missing:", e)
            continue
        print("reads:", len(study.trials))
        try:
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        except HubPermissionError as e:
            print("refused:", e)
"""


def test_a_private_team_study_is_hidden_from_outsiders_and_read_only_to_a_read_token(
    hub_server, client_python, alice, bob, django_user_model
):
    team = do_create_team(alice, "vision")
    carol = django_user_model.objects.create_user("carol")
    do_add_member(team, alice, "carol", "editor")
    # Alice's token is limited to the team: the study she creates goes into it.
    alices = ApiToken.issue(alice, "laptop", team=team)[1]
    run_client(client_python, hub_server, alices, """
        import optuna
        from optuna_hub_client import HubStorage
        study = optuna.create_study(study_name="secret", storage=HubStorage())
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    """)  # fmt: skip
    Study.objects.filter(name="secret").update(visibility="private")
    assert Study.objects.get(name="secret").team == team

    outsider = run_client(client_python, hub_server, token_for(bob), HIDDEN)
    assert outsider.splitlines() == [
        "listed: []",
        "missing: 'No such study secret.'",
        "missing: 'No such study nobody.'",
    ]
    read_only = ApiToken.issue(carol, "ro", scope="read")[1]
    reader = run_client(client_python, hub_server, read_only, HIDDEN)
    assert "listed: ['secret']" in reader and "reads: 2" in reader
    assert "refused: This API token's scope is read: it may only read." in reader
    assert Trial.objects.filter(study__name="secret").count() == 2
