"""The deployment files (Dockerfile, .dockerignore, compose.yaml), checked without a Docker engine.

The static tests parse both files and hold them to the hub: what the image copies
exists and is not ignored, every variable the hub's services get is a setting the
hub reads, every command is one the hub has. The slow tests run the services'
commands as their containers would (the image's environment plus the service's,
nothing of this shell's) but outside one, on a fresh PostgreSQL database and Redis.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.metadata
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import (
    BASE_DIR,
    POSTGRES_URL,
    REDIS_URL,
    free_port,
    require_service,
    wait_for,
)

DOCKERFILE = BASE_DIR / "Dockerfile"
COMPOSE = BASE_DIR / "compose.yaml"
WORKDIR = "/app"
HUB_SERVICES = ("migrate", "web", "worker")
# Variables the hub's services get that are not the hub's own settings, and who reads them.
NOT_HUB_SETTINGS = {
    "WEB_CONCURRENCY": "gunicorn: its worker processes",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client (and studies/ops/metrics.py)",
}
# What an operator sets for compose (README "Production"): a proxy terminates TLS.
OPERATOR_VARIABLES = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": "deploytest",
    "ALLOWED_HOSTS": "hub.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://hub.example.org",
    "HUB_HTTPS": "true",
    "HUB_BEHIND_PROXY": "true",
    "HUB_METRICS_TOKEN": "metrics-token",
}
HEALTH_PATH = "/healthz"
# Requirements after this line are for tests and benchmarks; the image leaves them out.
TESTS_MARKER = "# Tests"


@dataclass
class Instruction:
    name: str
    args: str

    def exec_form(self) -> list[str]:
        assert self.args.startswith("["), f"{self.name} should use the exec (JSON) form"
        return json.loads(self.args)


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines inside a continuation too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        name, _, args = (current + stripped).partition(" ")
        instructions.append(Instruction(name.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continuation"
    return instructions


def instructions(name: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.name == name]


def image_env() -> dict[str, str]:
    env = {}
    for instruction in instructions("ENV"):
        for pair in shlex.split(instruction.args):
            key, equals, value = pair.partition("=")
            assert equals, f"ENV {instruction.args!r} should use KEY=value"
            env[key] = value
    return env


def healthcheck() -> list[str]:
    (check,) = instructions("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), check.args
    return Instruction("CMD", command.strip()).exec_form()


def image_command() -> list[str]:
    return instructions("CMD")[-1].exec_form()


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service_command(name: str) -> list[str]:
    return compose()["services"][name].get("command") or image_command()


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $$."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        given = variables.get(name)
        if operator in (":?", "?") and not given:
            raise KeyError(f"{name}: {argument}")
        if operator == ":-":
            return given or argument
        if operator == "-":
            return argument if given is None else given
        return given or ""

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}", substitute, value)


def ignore_patterns() -> list[str]:
    lines = (BASE_DIR / ".dockerignore").read_text().splitlines()
    patterns = [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not checked here"
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out (it or a folder above it matches)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]):
                return True
    return False


def hub_settings() -> set[str]:
    """The environment variables the hub reads: its settings, and manage.py's own."""
    source = (BASE_DIR / "optuna_hub" / "settings.py").read_text()
    source += (BASE_DIR / "manage.py").read_text()
    pattern = r"""(?:os\.environ\.get|os\.getenv|envbool|envint|envlist)\(\s*["'](\w+)["']"""
    names = set(re.findall(pattern, source))
    names |= set(re.findall(r"""os\.environ\[["'](\w+)["']\]""", source))
    # The parser works:
    assert {"DATABASE_URL", "SECRET_KEY", "HUB_WORKERS", "HUB_NO_BOOTSTRAP"} <= names
    return names


def requirement_lines() -> tuple[list[str], list[str]]:
    """requirements.txt's lines before the tests marker (the image's) and after it."""
    lines = (BASE_DIR / "requirements.txt").read_text().splitlines()
    assert TESTS_MARKER in lines, f"requirements.txt should have a {TESTS_MARKER!r} line"
    cut = lines.index(TESTS_MARKER)

    def requirements(part: list[str]) -> list[str]:
        return [line.strip() for line in part if line.strip() and line.strip()[0] != "#"]

    return requirements(lines[:cut]), requirements(lines[cut:])


def requirement(line: str) -> Requirement:
    if line.startswith("-e "):  # a project of this repository, by its path
        pyproject = BASE_DIR / line[3:].strip() / "pyproject.toml"
        return Requirement(tomllib.loads(pyproject.read_text())["project"]["name"])
    return Requirement(line)


def installed_with(requirements: list[Requirement]) -> set[str]:
    """The distributions installing ``requirements`` brings, theirs included."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements)
    while todo:
        wanted = todo.pop()
        key = (canonicalize_name(wanted.name), frozenset(wanted.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            needs = importlib.metadata.distribution(wanted.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform
        for need in map(Requirement, needs):
            extras = wanted.extras or {""}
            if need.marker is None or any(need.marker.evaluate({"extra": e}) for e in extras):
                todo.append(need)
    return {name for name, _ in seen}


def hub_imports() -> dict[str, str]:
    """Every top-level module the hub's code imports, with a file that imports it."""
    files = [*(BASE_DIR / "studies").rglob("*.py"), *(BASE_DIR / "optuna_hub").rglob("*.py")]
    files += (BASE_DIR / "client" / "optuna_hub_client").rglob("*.py")
    # `manage.py test` runs pytest: the image has no tests to run.
    files.remove(BASE_DIR / "studies" / "management" / "commands" / "test.py")
    modules = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split(".")[0], str(file.relative_to(BASE_DIR)))
    return modules


# The image


def test_the_image_is_built_on_slim_python_3_11() -> None:
    (base,) = instructions("FROM")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base.args), base.args
    assert dockerfile()[0].name == "FROM"


def test_the_image_runs_as_a_user_it_creates_not_root() -> None:
    steps = dockerfile()
    users = [i for i in steps if i.name == "USER"]
    assert users, "the image should switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    runs = " ".join(i.args for i in steps if i.name == "RUN")
    assert re.search(rf"useradd\b[^&]*\b{user}\b", runs), f"no RUN creates the user {user}"
    assert steps.index(users[-1]) < steps.index(instructions("CMD")[-1])


def test_everything_the_image_copies_exists_and_is_in_the_build_context() -> None:
    patterns = ignore_patterns()
    copies = instructions("COPY") + instructions("ADD")
    assert copies
    for copy in copies:
        *sources, _destination = [a for a in shlex.split(copy.args) if not a.startswith("--")]
        for source in sources:
            assert (BASE_DIR / source).exists(), f"COPY {source}: not in the repository"
            assert source == "." or not ignored(source, patterns), f"COPY {source}: ignored"


def test_the_build_context_leaves_out_local_state_and_keeps_the_hub() -> None:
    patterns = ignore_patterns()
    # var/ holds the secret key and the SQLite database: never in an image.
    for path in ("var/secret_key", "var/hub.sqlite3", ".venv/bin/python", ".git/HEAD"):
        assert ignored(path, patterns), path
    assert ignored("studies/__pycache__/models.cpython-311.pyc", patterns)
    assert ignored("docs/screenshots/study.png", patterns)
    needed = [BASE_DIR / "manage.py", BASE_DIR / "requirements.txt"]
    for folder in ("optuna_hub", "studies", "templates", "client/optuna_hub_client"):
        needed += (p for p in (BASE_DIR / folder).rglob("*") if "__pycache__" not in p.parts)
    needed += [BASE_DIR / "client" / "pyproject.toml", BASE_DIR / "client" / "README.md"]
    kept_out = [str(p.relative_to(BASE_DIR)) for p in needed]
    kept_out = [p for p in kept_out if ignored(p, patterns)]
    assert not kept_out, f"the hub needs these, .dockerignore leaves them out: {kept_out}"


def test_the_image_installs_only_the_hubs_requirements_and_all_it_imports() -> None:
    runs = " ".join(i.args for i in instructions("RUN"))
    # The Dockerfile cuts requirements.txt at the marker (manage.py and the README
    # keep installing the whole file).
    assert f"sed '/^{TESTS_MARKER}/,$d' requirements.txt" in runs
    hub, rest = requirement_lines()
    names = {requirement(line).name for line in hub}
    assert {"Django", "gunicorn", "whitenoise", "psycopg", "redis", "django-q2"} <= names
    assert "optuna-hub-client" in names  # by its path: the image copies client/ first
    assert len([line for line in hub if line.startswith("torch==")]) == 1  # the CPU wheel's pin
    assert {"pytest", "playwright", "schemathesis", "ruff"} <= {requirement(r).name for r in rest}
    # What the image installs brings every package the hub imports.
    installed = installed_with([requirement(line) for line in hub])
    distributions = importlib.metadata.packages_distributions()
    local = {"studies", "optuna_hub", "optuna_hub_client"}
    missing = {
        module: file
        for module, file in hub_imports().items()
        if module not in sys.stdlib_module_names | local
        and not {canonicalize_name(d) for d in distributions.get(module, [])} & installed
    }
    assert not missing, f"imported by the hub, not in requirements.txt's hub part: {missing}"


def test_the_image_can_back_up_the_compose_files_postgres() -> None:
    # manage.py backup / restore run pg_dump / pg_restore, which must not be older
    # than the server: bookworm's postgresql-client is 15.
    runs = " ".join(i.args for i in instructions("RUN"))
    assert re.search(r"apt-get install [^&]*\bpostgresql-client\b", runs)
    assert instructions("FROM")[0].args.endswith("-bookworm")
    assert compose()["services"]["postgres"]["image"] == "postgres:15"


def test_the_image_serves_with_gunicorn_and_collects_static_files_at_build() -> None:
    env = image_env()
    assert env["HUB_NO_BOOTSTRAP"] == "1"  # manage.py makes no .venv in the image
    assert env["HUB_VAR_DIR"].startswith(WORKDIR)
    assert instructions("WORKDIR")[-1].args == WORKDIR
    command = image_command()
    assert command[:2] == ["gunicorn", "optuna_hub.wsgi"]
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    # The number of web processes comes from the environment, not the command.
    assert "--workers" not in command and "-w" not in command
    assert int(env["WEB_CONCURRENCY"]) >= 1
    runs = [i.args for i in instructions("RUN")]
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    module = importlib.import_module(command[1].split(":")[0])
    assert callable(module.application)


def test_the_image_checks_its_health_without_curl() -> None:
    command = healthcheck()
    assert command[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:8000{HEALTH_PATH}" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")


# The compose file


def test_compose_runs_the_hub_on_postgres_and_redis_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {*HUB_SERVICES, "postgres", "redis"}
    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert redis["image"] == "redis:7"
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    volumes = compose()["volumes"]
    assert postgres["volumes"][0].split(":") == ["postgres-data", "/var/lib/postgresql/data"]
    assert "postgres-data" in volumes
    for name in HUB_SERVICES:
        assert services[name]["build"] == "."
    assert (BASE_DIR / services["web"]["build"] / "Dockerfile").exists()


def test_web_and_workers_start_after_the_services_are_healthy_and_migrations_ran() -> None:
    services = compose()["services"]
    for name in ("web", "worker"):
        depends = {s: c["condition"] for s, c in services[name]["depends_on"].items()}
        assert depends == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_scale_and_only_the_web_checks_its_health() -> None:
    services = compose()["services"]
    # --scale worker=N needs no fixed name or port.
    assert not {"container_name", "ports", "hostname"} & set(services["worker"])
    assert services["web"]["healthcheck"]["test"] == ["CMD", *healthcheck()]
    for name in ("worker", "migrate"):  # no web server there
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_every_variable_the_hub_gets_is_a_setting_it_reads() -> None:
    known = hub_settings() | set(NOT_HUB_SETTINGS)
    for name in HUB_SERVICES:
        unknown = set(compose()["services"][name]["environment"]) - known
        assert not unknown, f"{name}: not a setting in optuna_hub/settings.py: {unknown}"
    assert set(image_env()) - known <= {
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    }


def test_compose_refuses_to_start_without_a_secret_key_or_database_password() -> None:
    environment = compose()["services"]["web"]["environment"]
    for missing in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        variables = {k: v for k, v in OPERATOR_VARIABLES.items() if k != missing}
        with pytest.raises(KeyError, match=missing):
            [interpolate(str(value), variables) for value in environment.values()]


def test_the_hub_services_reach_postgres_and_redis_by_their_service_names() -> None:
    services = compose()["services"]
    env = {
        k: interpolate(str(v), OPERATOR_VARIABLES)
        for k, v in services["web"]["environment"].items()
    }
    database, broker = urlparse(env["DATABASE_URL"]), urlparse(env["REDIS_URL"])
    postgres = {
        k: interpolate(v, OPERATOR_VARIABLES)
        for k, v in services["postgres"]["environment"].items()
    }
    assert database.hostname == "postgres" and broker.hostname == "redis"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"


def test_every_command_the_services_run_is_one_the_hub_has() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "help", "--commands"],
        cwd=BASE_DIR,
        env={**os.environ, **image_env(), "HUB_VAR_DIR": os.environ.get("HUB_VAR_DIR", "var")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = set(result.stdout.split())
    for name in HUB_SERVICES:
        argv = service_command(name)
        if argv[:2] == ["python", "manage.py"]:
            assert argv[2] in commands, f"{name}: manage.py has no command {argv[2]!r}"
        else:
            assert argv[0] == "gunicorn", name


def test_the_readmes_production_section_names_real_settings() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    section = readme[readme.index("## Production\n") :]
    section = section[: section.index("\n## ", 1)]
    variable = (
        r"HUB_[A-Z0-9_]*[A-Z0-9]|[A-Z]+_URL|SECRET_KEY|DEBUG|[A-Z_]+_(?:HOSTS|ORIGINS|FORMAT)"
    )
    named = set(re.findall(rf"`({variable})(?:=[^`]*)?`", section))
    assert {"SECRET_KEY", "ALLOWED_HOSTS", "HUB_BEHIND_PROXY", "LOG_FORMAT"} <= named
    assert not named - hub_settings() - set(NOT_HUB_SETTINGS)
    for name in HUB_SERVICES:
        assert f"`{name}`" in section, f"README's Production section should name {name}"


# The services' commands, run outside a container


@dataclass
class Stack:
    root: Path  # stands for the container's own paths (the image's var/, /dev/shm, home)
    database_url: str

    def local(self, value: str) -> str:
        """A container's path as the test's: under ``root``."""
        for path, here in ((WORKDIR, self.root), ("/dev/shm", self.root / "shm")):
            value = value.replace(path, str(here))
        return value

    def env(self, service: str | None) -> dict[str, str]:
        """The container's environment: the image's, then the service's (None: the build's)."""
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root / "home"), "LANG": "C.UTF-8"}
        env |= {k: self.local(v) for k, v in image_env().items()}
        if service is None:
            return env
        given = compose()["services"][service]["environment"]
        env |= {k: interpolate(str(v), OPERATOR_VARIABLES) for k, v in given.items()}
        env["DATABASE_URL"] = self.database_url
        env["REDIS_URL"] = REDIS_URL
        # Not the hub's default queue: other tests share this Redis server.
        env["HUB_QUEUE_NAME"] = f"deployment-test-{os.getpid()}"
        return env

    def argv(self, command: list[str], port: int | None = None) -> list[str]:
        """A container's command for this machine: this Python, a free local port."""
        programs = {"python": [sys.executable], "gunicorn": [sys.executable, "-m", "gunicorn"]}
        argv = [*programs.get(command[0], [command[0]]), *map(self.local, command[1:])]
        if port is not None:
            argv = [a.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for a in argv]
            argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in argv]
        return argv

    def run(
        self, service: str | None, command: list[str], **env: str
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(command),
            cwd=BASE_DIR,
            env=self.env(service) | env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fresh PostgreSQL database, migrated by the migrate service's command."""
    import psycopg

    require_service("PostgreSQL", POSTGRES_URL)
    require_service("Redis", REDIS_URL)
    name = f"deployment_test_{os.getpid()}"
    admin = psycopg.connect(POSTGRES_URL, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")
    root = tmp_path_factory.mktemp("container")
    (root / "home").mkdir()
    (root / "shm").mkdir()
    stack = Stack(root, urlparse(POSTGRES_URL)._replace(path=f"/{name}").geturl())
    try:
        migrate = stack.run("migrate", service_command("migrate"))
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        yield stack
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def build_step(word: str) -> tuple[dict[str, str], list[str]]:
    """The image's build command that contains ``word``: its variables and argv."""
    runs = " && ".join(i.args for i in instructions("RUN"))
    (step,) = [s for s in runs.split("&&") if word in s]
    words = shlex.split(step)
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"\w+=.*", w))
    return env, [w for w in words if not re.fullmatch(r"\w+=.*", w)]


@pytest.mark.slow
def test_migrations_apply_again_cleanly_as_an_upgrade_does(stack: Stack) -> None:
    again = stack.run("migrate", service_command("migrate"))
    assert again.returncode == 0, again.stderr
    check = stack.run("migrate", ["python", "manage.py", "migrate", "--check"])
    assert check.returncode == 0, check.stdout + check.stderr


def get(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.mark.slow
def test_the_web_command_serves_the_hub_and_passes_its_health_check(stack: Stack) -> None:
    build_env, collectstatic = build_step("collectstatic")
    collected = stack.run(None, collectstatic, **build_env)
    assert collected.returncode == 0, collected.stderr
    assert any((stack.root / "var" / "static").iterdir())
    port = free_port()
    log = open(stack.root / "web.log", "wb")  # noqa: SIM115 (closed with the process)
    web = subprocess.Popen(
        stack.argv(service_command("web"), port),
        cwd=BASE_DIR,
        env=stack.env("web"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # As the proxy forwards a request: the public host name, over HTTPS.
        proxied = {"Host": "hub.example.org", "X-Forwarded-Proto": "https"}
        url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
        wait_for(lambda: web.poll() is not None or get(url, **proxied) == 200, 60, HEALTH_PATH)
        assert web.poll() is None, (stack.root / "web.log").read_text()
        check = stack.run("web", stack.argv(healthcheck(), port))
        assert check.returncode == 0, check.stderr
        # Prometheus scrapes with the token; the processes' counters add up.
        token = {"Authorization": f"Bearer {OPERATOR_VARIABLES['HUB_METRICS_TOKEN']}"}
        assert get(f"http://127.0.0.1:{port}/metrics", **proxied, **token) == 200
        assert list((stack.root / "shm").glob("*.db")), (
            "no metric files in PROMETHEUS_MULTIPROC_DIR"
        )
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(30)
        log.close()
    assert web.returncode == 0, (stack.root / "web.log").read_text()


@pytest.mark.slow
def test_the_worker_command_runs_tasks_and_stops_cleanly_on_sigterm(stack: Stack) -> None:
    log_path = stack.root / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    worker = subprocess.Popen(
        stack.argv(service_command("worker")),
        cwd=BASE_DIR,
        env=stack.env("worker"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a cluster left behind can be killed whole
    )
    try:
        # A task queued on the compose file's broker (Redis) comes back done.
        task = (
            "from django_q.tasks import async_task, result\n"
            "print(result(async_task('math.factorial', 5), wait=20000))"
        )
        ran = stack.run("worker", ["python", "manage.py", "shell", "-c", task])
        assert ran.stdout.split()[-1:] == ["120"], ran.stdout + ran.stderr
        time.sleep(1)
        assert worker.poll() is None, log_path.read_text()
        # docker stop: SIGTERM to the container's main process.
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        assert worker.returncode == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
