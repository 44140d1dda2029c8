"""Settings for Optuna Hub, read from environment variables with safe defaults.

The embedded default needs no service: a SQLite file under var/ and the django-q2
ORM broker. DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("HUB_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def default_secret_key() -> str:
    # A key generated once per installation and kept under var/, so sessions
    # survive restarts without anyone having to invent a secret.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # Written to a file that is 0600 from its creation (never readable by
        # others, even for a moment), then linked into place: processes
        # starting at once all read the one key that won, never a partial file.
        draft = VAR_DIR / f".secret_key.{os.getpid()}"
        draft.unlink(missing_ok=True)  # left by a crashed process with this pid
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(50))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process was first; use its key
        finally:
            draft.unlink()
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or default_secret_key()
DEBUG = envbool("DEBUG", "false")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# Served over HTTPS (directly or by a proxy): cookies only travel encrypted,
# plain HTTP is redirected, and browsers are told to use HTTPS from then on.
HUB_HTTPS = envbool("HUB_HTTPS", "false")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HUB_HTTPS
SECURE_HSTS_SECONDS = envint("HUB_HSTS_SECONDS", "31536000" if HUB_HTTPS else "0")
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("HUB_HSTS_INCLUDE_SUBDOMAINS", "true")
# Only a domain submitted to the browsers' preload list is affected by this flag.
SECURE_HSTS_PRELOAD = envbool("HUB_HSTS_PRELOAD", "true")
# Behind a reverse proxy that terminates TLS and sets X-Forwarded-Proto and
# X-Forwarded-For (and strips what clients send): without the first, the
# redirect to HTTPS would loop; the second is the address logins are throttled by.
HUB_BEHIND_PROXY = envbool("HUB_BEHIND_PROXY", "false")
if HUB_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A browser session lasts this long from login (seconds); scripts use API tokens.
SESSION_COOKIE_AGE = envint("HUB_SESSION_AGE", str(8 * 3600))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "csp",
    "studies",
]

MIDDLEWARE = [
    # First, so it times everything and every response carries the X-Request-ID.
    "studies.middleware.request_middleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studies.middleware.audit_context_middleware",
    # Last, as django-axes asks: it turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "optuna_hub.urls"
WSGI_APPLICATION = "optuna_hub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str) -> dict:
    try:
        config = dj_database_url.parse(
            url, conn_max_age=envint("HUB_CONN_MAX_AGE", "600"), conn_health_checks=True
        )
    except ValueError as e:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {e}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the writer; IMMEDIATE transactions take the
        # write lock up front, so a web process and workers writing at once wait
        # for each other (up to `timeout`) instead of failing "database is locked".
        # Connections are kept (conn_max_age above): opening one costs a file
        # open, the PRAGMAs and a schema parse, as much again as a random-sampler
        # ask + tell over HTTP (benchmarks/http_requests.py). A local file needs
        # no health check.
        config["CONN_HEALTH_CHECKS"] = False
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # A file, not memory, so worker and server processes started by tests share
        # it; one per test run, so runs side by side do not collide.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    else:
        config["TEST"] = {"NAME": f"test_{config['NAME']}_{os.getpid()}"}
        # Each trial is several small transactions; waiting for each commit to
        # reach the disk is most of a trial's time on PostgreSQL. "off" (the
        # README says what it risks) returns before the flush, as SQLite's WAL
        # with synchronous=NORMAL above already does.
        commit = os.environ.get("HUB_PG_SYNCHRONOUS_COMMIT", "on")
        if commit not in PG_SYNCHRONOUS_COMMIT:
            raise ImproperlyConfigured(
                f"HUB_PG_SYNCHRONOUS_COMMIT must be one of {', '.join(PG_SYNCHRONOUS_COMMIT)}"
            )
        if commit != "on":
            config["OPTIONS"] = {"options": f"-c synchronous_commit={commit}"}
    return config


PG_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'hub.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": envint("HUB_PASSWORD_MIN_LENGTH", "10")},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Failed logins (the login page, the admin's and POST /api/auth/token/) are
# counted by django-axes in the database, so every web process sees the same
# counts. An address or a username with HUB_LOGIN_FAILURE_LIMIT failures within
# HUB_LOGIN_COOLOFF seconds is refused (429 with Retry-After), even with the
# right password, until the cool-off has passed since its last failure.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("HUB_LOGIN_FAILURE_LIMIT", "10")
AXES_COOLOFF_TIME = timedelta(seconds=envint("HUB_LOGIN_COOLOFF", "900"))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
# Attempts while locked out do not extend the lock: Retry-After stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "studies.lockout.lockout_response"
# The connecting address, or the one the proxy appended to X-Forwarded-For;
# never an address the client wrote itself.
AXES_CLIENT_IP_CALLABLE = "studies.lockout.client_ip"
AXES_VERBOSE = False
# Unrevoked, unexpired API tokens per user (each API login makes one).
HUB_MAX_API_TOKENS = envint("HUB_MAX_API_TOKENS", "100")

# Teams (studies/models/team.py). A new study is "internal" (every signed-in user
# reads it) or "private" (its owner or its team's members only) unless its creator
# says otherwise.
HUB_DEFAULT_VISIBILITY = os.environ.get("HUB_DEFAULT_VISIBILITY", "internal")
if HUB_DEFAULT_VISIBILITY not in ("internal", "private"):
    raise ImproperlyConfigured('HUB_DEFAULT_VISIBILITY must be "internal" or "private"')
# Teams a user may create (staff: any number); members of one team.
HUB_MAX_TEAMS_PER_USER = envint("HUB_MAX_TEAMS_PER_USER", "20")
HUB_MAX_TEAM_MEMBERS = envint("HUB_MAX_TEAM_MEMBERS", "500")
# Audit entries shown per page (GET /api/audit/ pages as the rest of the API).
HUB_ACTIVITY_ON_STUDY_PAGE = envint("HUB_ACTIVITY_ON_STUDY_PAGE", "20")

# The pages load scripts only from the hub (no inline script, no eval); styles
# may be inline because plotly.js writes its own <style> and style attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every start without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from their packages as well, so `runserver`
# and tests work without a collectstatic step.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "optuna-hub",
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "studies.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Optuna Hub API",
    "DESCRIPTION": "Studies, trials and ask / suggest / report / tell over HTTP.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are for the hub's users: a token or a session.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # check --deploy is about the deployment; the schema has its own tests
    # (tests/test_api_schema.py), and its notes would hide the security warnings.
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

REDIS_URL = os.environ.get("REDIS_URL", "")
Q_CLUSTER = {
    # Also the queue's key in Redis: installations (or test runs) sharing one
    # Redis server need different names.
    "name": os.environ.get("HUB_QUEUE_NAME", "optuna-hub"),
    "workers": envint("HUB_WORKERS", "2"),
    # A task runs a whole job; the Job row, not django-q2, tracks its progress.
    "timeout": envint("HUB_TASK_TIMEOUT", "86400"),
    "retry": envint("HUB_TASK_RETRY", "86460"),
    "max_attempts": 0,
    "ack_failures": True,
    "catch_up": False,
    "poll": 0.2,
    "save_limit": 1000,
    "label": "Django Q2",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Trials of hub-run jobs record a heartbeat; a RUNNING trial whose heartbeat is
# older than the grace period is failed and re-run with the same parameters.
HUB_HEARTBEAT_INTERVAL = envint("HUB_HEARTBEAT_INTERVAL", "5")
HUB_HEARTBEAT_GRACE = envint("HUB_HEARTBEAT_GRACE", "20")
HUB_MAX_JOB_CONCURRENCY = envint("HUB_MAX_JOB_CONCURRENCY", "8")
# Memory-mode jobs write their finished trials to the database this often (seconds).
HUB_MEMORY_FLUSH_INTERVAL = envint("HUB_MEMORY_FLUSH_INTERVAL", "2")
# Restarts of a job whose workers died before the watchdog fails it.
HUB_MAX_JOB_RESUMES = envint("HUB_MAX_JOB_RESUMES", "5")
# Projects register their own objectives by dotted path: "package.module.callable".
HUB_OBJECTIVES = envlist("HUB_OBJECTIVES", "")

# Command objectives (issue #9, a user must stay inside what staff allowed;
# studies/objectives/sandbox.py). The worker's variables a program sees
# (NAME or PREFIX*; an objective's pass_environment adds names; the hub's own
# secrets and HUB_* settings never pass).
HUB_COMMAND_ENV_ALLOWLIST = envlist(
    "HUB_COMMAND_ENV_ALLOWLIST", "PATH,HOME,LANG,LANGUAGE,LC_*,TZ,TERM,TMPDIR,CUDA_VISIBLE_DEVICES"
)
# An unprivileged user to run programs as (the worker must run as root); "" runs
# them as the worker's own user.
HUB_COMMAND_USER = os.environ.get("HUB_COMMAND_USER", "").strip()
# Limits of each program process (0: none): CPU seconds, memory it may allocate
# (MB), open files.
HUB_COMMAND_CPU_SECONDS = envint("HUB_COMMAND_CPU_SECONDS", "86400")
HUB_COMMAND_MEMORY_MB = envint("HUB_COMMAND_MEMORY_MB", "4096")
HUB_COMMAND_MAX_FILES = envint("HUB_COMMAND_MAX_FILES", "1024")
# Each trial runs in a fresh directory made here and removed afterwards.
HUB_COMMAND_WORK_DIR = Path(os.environ.get("HUB_COMMAND_WORK_DIR") or VAR_DIR / "trials")

# Bounds on what users store (issue #9, stored input that breaks pages): every
# page and export must be able to render what was accepted, quickly.
# Nesting of any JSON value a user sends (user_attrs, sampler and pruner options, ...).
HUB_MAX_JSON_DEPTH = envint("HUB_MAX_JSON_DEPTH", "20")
# A study's or an enqueued trial's user_attrs, as stored JSON text.
HUB_MAX_USER_ATTRS_BYTES = envint("HUB_MAX_USER_ATTRS_BYTES", "65536")
# Parameters of a search space, an ask body, an enqueued trial or a define-by-run trial:
# each suggestion rewrites the trial's params, so a trial's cost grows with their square.
HUB_MAX_PARAMS = envint("HUB_MAX_PARAMS", "100")
# Choices of a categorical parameter (and values of a condition): every trial stores them.
HUB_MAX_CHOICES = envint("HUB_MAX_CHOICES", "1000")

# Limits against requests that exhaust the server (issue #9, studies/config/samplers.py
# and studies/jobs/): each bounds what one user's request or job can take.
# Points of a grid sampler's grid (and values of one parameter for bruteforce).
HUB_MAX_GRID_POINTS = envint("HUB_MAX_GRID_POINTS", "100000")
# A job without max_failed_trials fails after max(this, 2 x n_trials) failed trials.
HUB_DEFAULT_MAX_FAILED_TRIALS = envint("HUB_DEFAULT_MAX_FAILED_TRIALS", "10")
# Queued or running jobs a user may have; one more is a 429.
HUB_MAX_ACTIVE_JOBS_PER_USER = envint("HUB_MAX_ACTIVE_JOBS_PER_USER", "10")
# Slots (trials at once) of one user's jobs running on the workers; the rest wait.
HUB_MAX_RUNNING_SLOTS_PER_USER = envint("HUB_MAX_RUNNING_SLOTS_PER_USER", "4")
# The same for all the jobs on one team's studies, whoever started them.
HUB_MAX_ACTIVE_JOBS_PER_TEAM = envint("HUB_MAX_ACTIVE_JOBS_PER_TEAM", "20")
HUB_MAX_RUNNING_SLOTS_PER_TEAM = envint("HUB_MAX_RUNNING_SLOTS_PER_TEAM", "8")
# A job's delay up to this many seconds is waited out in the worker; a longer one
# frees the worker and the slot is queued again for its start time.
HUB_DELAY_SLEEP_MAX = envint("HUB_DELAY_SLEEP_MAX", "5")

# The remote Optuna storage (optuna_hub_client.HubStorage, studies/api/remote_storage.py).
# Trials in one answer to a client's read; a larger study is read in pages.
HUB_STORAGE_PAGE_SIZE = envint("HUB_STORAGE_PAGE_SIZE", "10000")
# Unfinished trials a client may name in one read (the client names at most 1000).
HUB_STORAGE_MAX_IDS = envint("HUB_STORAGE_MAX_IDS", "1000")
# Writes a client may send ahead of one call, all run while holding the write lock
# (the client sends at most 100).
HUB_STORAGE_MAX_PENDING = envint("HUB_STORAGE_MAX_PENDING", "100")
# How long the first answer to a retried call (a new study or trial) is kept.
HUB_STORAGE_IDEMPOTENCY_HOURS = envint("HUB_STORAGE_IDEMPOTENCY_HOURS", "24")
# Intermediate values (reports) of one trial: each report rewrites them all.
HUB_MAX_INTERMEDIATE_VALUES = envint("HUB_MAX_INTERMEDIATE_VALUES", "10000")

# Operations (issue #13, studies/ops/): health, metrics, logs.
# /healthz says the process answers; /readyz checks the database, the migrations,
# the broker and a live worker cluster (200, or 503 with each check's result).
# Probes may come over plain HTTP even when HUB_HTTPS redirects everything else.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# /metrics answers a request bearing "Authorization: Bearer <HUB_METRICS_TOKEN>"
# (when set) or coming from one of HUB_METRICS_ALLOWED_IPS (addresses or networks
# such as 10.0.0.0/8); anything else is a 404, a wrong token from any address too.
HUB_METRICS_TOKEN = os.environ.get("HUB_METRICS_TOKEN", "")
HUB_METRICS_ALLOWED_IPS = envlist("HUB_METRICS_ALLOWED_IPS", "127.0.0.1,::1")
# Per-study series (trials by state per study) are off: their number grows with the hub.
HUB_METRICS_PER_STUDY = envbool("HUB_METRICS_PER_STUDY", "0")
# /readyz wants a worker cluster whose heartbeat is at most this many seconds old.
# (A cluster saves its stats every 0.5 s and they expire after 3 s, so this
# bound matters only against a host whose clock is off.)
HUB_READY_CLUSTER_MAX_AGE = envint("HUB_READY_CLUSTER_MAX_AGE", "120")
# The worker clusters' stats, which /readyz and /metrics read: in Redis with the
# Redis broker; with the ORM broker django-q2 keeps them in a Django cache, which
# must be one the web processes share (the default cache is per process): a file
# cache, so the ORM broker's web and workers must share a machine for /readyz.
if not REDIS_URL:
    CACHES["cluster_stats"] = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": VAR_DIR / "cluster-stats",
        "KEY_FUNCTION": "studies.ops.clusters.stats_key",
    }
    Q_CLUSTER["cache"] = "cluster_stats"
# "text" (one line per request or job event) or "json" (one JSON object per line,
# every log record: the request's fields, its request_id, a job's event).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured('LOG_FORMAT must be "text" or "json"')

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "studies.ops.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "django_q": {"level": os.environ.get("LOG_LEVEL", "INFO")},
        # optuna_hub.requests: one line per request; optuna_hub.jobs: jobs started and ended.
        "optuna_hub": {"level": os.environ.get("LOG_LEVEL", "INFO")},
    },
}
