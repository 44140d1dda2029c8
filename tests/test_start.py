"""`python3 manage.py start`, the README's first command, as a new user runs it.

A fresh SQLite file and var directory, the real web server and worker cluster,
and Ctrl-C as a terminal sends it: SIGINT to the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import requests

from studies.management.commands.start import STOP_TIMEOUT
from studies.objectives import objective
from tests.conftest import BASE_DIR, PYTHON, free_port, wait_for, wait_for_port

pytestmark = pytest.mark.slow
PASSWORD = "first-admin-password"


def start_hub(var_dir: Path, port: int, **extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "HUB_NO_BOOTSTRAP": "1",
        "HUB_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"sqlite:///{var_dir / 'hub.sqlite3'}",
        "HUB_ADMIN_PASSWORD": PASSWORD,
        "LOG_LEVEL": "INFO",  # so that both servers say how they stopped
        **extra,
    }
    return subprocess.Popen(
        [PYTHON, "manage.py", "start", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )


def state_and_parent(pid: int) -> tuple[str, int] | None:
    """A process's state letter (Z: exited, not yet reaped) and parent, or None once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (stat := state_and_parent(pid)) and stat[0] != "Z"}


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``: the web server, the cluster and their workers."""
    children: dict[int, list[int]] = {}
    for child in alive({int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}):
        if stat := state_and_parent(child):
            children.setdefault(stat[1], []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def login(port: int) -> tuple[requests.Session, str]:
    """A session with the printed first user's token, and the hub's address."""
    base = f"http://127.0.0.1:{port}"
    response = requests.post(
        f"{base}/api/auth/token/", json={"username": "admin", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    api = requests.Session()
    api.headers["Authorization"] = f"Token {response.json()['token']}"
    return api, base


def test_start_serves_the_hub_runs_jobs_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    hub = start_hub(tmp_path, port)
    try:
        wait_for_port(port, hub, timeout=60)
        # The printed first user logs in, over the API and on the pages.
        api, base = login(port)
        assert requests.get(f"{base}/accounts/login/").status_code == 200
        assert requests.get(f"{base}/static/studies/hub.css").status_code == 200

        # A job reaches the worker cluster and finishes.
        study = api.post(f"{base}/api/studies/", json={"name": "first", "objective": "sphere"})
        assert study.status_code == 201, study.text
        job = api.post(f"{base}/api/studies/{study.json()['id']}/jobs/", json={"n_trials": 5})
        assert job.status_code == 202, job.text

        def finished() -> dict | None:
            body = api.get(f"{base}/api/jobs/{job.json()['id']}/").json()
            return body if body["status"] not in ("queued", "running") else None

        assert wait_for(finished, 60, "the job to finish")["status"] == "succeeded"
        assert len(descendants(hub.pid)) >= 5  # gunicorn and 2 workers, the cluster and its own
    finally:
        processes = descendants(hub.pid)
        if hub.poll() is None:
            os.killpg(hub.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
        try:
            out, err = hub.communicate(timeout=60)
        finally:
            deadline = time.monotonic() + 5  # a process takes a moment to end
            while (left := alive(processes)) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:  # so that a failure here leaves nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert hub.returncode == 0, err[-3000:]
    assert "Created the first user: admin" in out and "Ctrl-C stops it" in out
    assert "Traceback" not in err
    # Each stopped cleanly, not by the SIGKILL that start falls back to.
    assert "Shutting down: Master" in err and "has stopped." in err, err[-3000:]
    assert not left, "a hub process outlived Ctrl-C"


def test_start_fails_with_one_line_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        hub = start_hub(tmp_path, taken.getsockname()[1])
        out, err = hub.communicate(timeout=90)
    assert hub.returncode == 1
    assert "CommandError: the web server exited (code 1); stopped the hub" in err
    assert "Traceback" not in err


def test_start_refuses_a_bad_worker_count_before_touching_anything(tmp_path):
    result = subprocess.run(
        [PYTHON, "manage.py", "start", "--workers", "0"],
        cwd=BASE_DIR,
        env={**os.environ, "HUB_NO_BOOTSTRAP": "1", "HUB_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: --workers must be at least 1"
    assert not (tmp_path / "hub.sqlite3").exists()


@objective(
    "slow_parabola",
    search_space={"x": {"type": "float", "low": -1, "high": 1}},
    description="x^2, two seconds a trial",
)
def slow_parabola(trial: optuna.Trial, params: dict) -> float:
    time.sleep(2)
    return params["x"] ** 2


def stop_with_ctrl_c(hub: subprocess.Popen) -> tuple[str, str, float]:
    """Ctrl-C as a terminal sends it; the output and how long the hub took to stop."""
    started = time.monotonic()
    os.killpg(hub.pid, signal.SIGINT)
    out, err = hub.communicate(timeout=90)
    return out, err, time.monotonic() - started


def test_ctrl_c_during_a_job_hands_its_trials_back_and_the_next_start_resumes_it(tmp_path):
    env = {"HUB_OBJECTIVES": "tests.test_start.slow_parabola", "HUB_WORKERS": "2"}
    port = free_port()
    hub = start_hub(tmp_path, port, **env)
    try:
        wait_for_port(port, hub, timeout=60)
        api, base = login(port)
        study = api.post(
            f"{base}/api/studies/", json={"name": "long", "objective": "slow_parabola"}
        )
        assert study.status_code == 201, study.text
        study_id = study.json()["id"]
        job = api.post(
            f"{base}/api/studies/{study_id}/jobs/", json={"n_trials": 6, "concurrency": 2}
        )
        assert job.status_code == 202, job.text
        job_url = f"{base}/api/jobs/{job.json()['id']}/"

        def two_running() -> bool:
            return api.get(job_url).json()["progress"]["running"] == 2

        wait_for(two_running, 60, "two trials to run")
        out, err, took = stop_with_ctrl_c(hub)
    finally:
        if hub.poll() is None:
            hub.kill()
    assert hub.returncode == 0, err[-3000:]
    # Before: trials went on for 31 s, until the SIGKILL fallback, saying nothing.
    print(f"start stopped {took:.1f} s after Ctrl-C")  # shown with pytest -s
    assert took < STOP_TIMEOUT, f"stopping took {took:.1f} s"
    assert "has stopped." in err, err[-3000:]  # the cluster stopped, not killed
    handed = re.findall(r"Handed back trial (\d+) of job", out)
    assert len(handed) == 2, out
    assert "resumes when the hub starts again" in out

    hub = start_hub(tmp_path, port, **env)
    try:
        wait_for_port(port, hub, timeout=60)
        api, base = login(port)

        def finished() -> dict | None:
            body = api.get(job_url).json()
            return body if body["status"] not in ("queued", "running") else None

        assert wait_for(finished, 120, "the resumed job to finish")["status"] == "succeeded"
        trials = api.get(f"{base}/api/studies/{study_id}/trials/").json()["results"]
    finally:
        out, err, _ = stop_with_ctrl_c(hub)
    assert f"Resuming job {job.json()['id']} of study 'long'" in out, out
    assert "2 handed-back trial(s) re-run first" in out, out
    by_number = {t["number"]: t for t in trials}
    for number in map(int, handed):
        failed = by_number[number]
        assert failed["state"] == "FAIL"
        # The same params ran again to the end: nothing the user started is lost.
        assert any(t["state"] == "COMPLETE" and t["params"] == failed["params"] for t in trials), (
            failed
        )
    assert sum(t["state"] == "COMPLETE" for t in trials) == 6
