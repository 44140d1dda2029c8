"""Request ids, the one log line per request, and the JSON log format (LOG_FORMAT=json).

Settings load this module while Django starts (LOGGING names its formatter), so
it imports nothing of the hub.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.core.signals import request_finished

requests_logger = logging.getLogger("optuna_hub.requests")

# A client's id is kept when it is a plain token, so it can never break a log line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The id of the request this thread (or task) is serving, for every log line it writes.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
# Paths and methods are the client's text: bounded, and without line breaks.
MAX_PATH = 300
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def forget_request_id(**kwargs: Any) -> None:
    # At the response's close, after Django's own log line about a 4xx or 5xx.
    current_request_id.set(None)


request_finished.connect(forget_request_id, dispatch_uid="studies.ops.logs.forget_request_id")


def request_id_for(header: str | None) -> str:
    """The client's X-Request-ID if it is a sane token, else a new one."""
    if header and SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, control characters escaped (no forged lines)."""
    text = text[:limit]
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def log_request(
    method: str, path: str, status: int, seconds: float, user_id: Any, request_id: str
) -> None:
    method, path = printable(method, 16), printable(path, MAX_PATH)
    user = "-" if user_id is None else str(user_id)
    duration_ms = round(seconds * 1000, 1)
    fields = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
    fields |= {"user": user, "request_id": request_id}
    requests_logger.info(
        "%s %s %s %.1fms user=%s request_id=%s",
        *(method, path, status, duration_ms, user, request_id),
        extra=fields,
    )


# The attributes every LogRecord has; anything else came in ``extra``.
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in STANDARD}
        if "request_id" not in entry and (request_id := current_request_id.get()):
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
