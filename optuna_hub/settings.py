"""Settings for Optuna Hub, read from environment variables with safe defaults.

The embedded default needs no service: a SQLite file under var/ and the django-q2
ORM broker. DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
"""

import os
import secrets
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
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or default_secret_key()
DEBUG = envbool("DEBUG", "false")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "studies",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    return config


DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'hub.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"django_q": {"level": os.environ.get("LOG_LEVEL", "INFO")}},
}
