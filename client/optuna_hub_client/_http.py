"""The hub's storage protocol over HTTP(S): one POST per call, kept-alive, retried.

Every call is ``POST {url}/api/storage/v2/{method}/`` with a JSON object of
arguments and the token in ``Authorization: Token ...``; the answer is a JSON
object, or an error ``{"error": <name>, "detail": <message>}`` that becomes the
exception Optuna's own storages raise (KeyError, DuplicatedStudyError, ...).

Connection failures, 502/503/504 and 429 are retried with exponential backoff.
A call that a retry could apply twice (a new study, a new trial, a state
change) carries an ``Idempotency-Key``: the hub answers a repeated key with
the first answer instead of applying the call again.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import urllib3
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError

from optuna_hub_client._wire import PROTOCOL

RETRY_STATUSES = {429, 502, 503, 504}


class HubError(Exception):
    """The hub could not be reached or answered with something unexpected."""


class HubPermissionError(PermissionError):
    """The hub refused the call: the token is not valid, or may not change that study."""


class HubRequestError(ValueError):
    """The hub refused the call's arguments; the message names the argument and why."""


# The error names the hub sends, as the exceptions Optuna's storages raise.
ERRORS: dict[str, type[Exception]] = {
    "KeyError": KeyError,
    "DuplicatedStudyError": DuplicatedStudyError,
    "UpdateFinishedTrialError": UpdateFinishedTrialError,
    "ValueError": ValueError,
    "PermissionError": HubPermissionError,
    "InvalidRequest": HubRequestError,
}


class Connection:
    """Calls to one hub with one token, on a pool of kept-alive connections (thread-safe)."""

    def __init__(self, url: str, token: str, timeout: float, retries: int, backoff: float) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._setup()

    def _setup(self) -> None:
        retry = urllib3.Retry(
            total=self.retries,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # POST too: the calls a retry could double carry a key
            raise_on_status=False,  # the last answer is read as any other
            respect_retry_after_header=True,
        )
        self._pool = urllib3.PoolManager(
            maxsize=8, retries=retry, timeout=urllib3.Timeout(connect=10, read=self.timeout)
        )
        self._headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_pool"], state["_headers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def call(self, method: str, idempotent: bool = False, **args: Any) -> Any:
        """Run ``method`` on the hub; its result, or the exception it stands for."""
        return self.request(method, args, idempotent)["result"]

    def request(self, method: str, args: dict[str, Any], idempotent: bool = False) -> Any:
        """Run ``method`` on the hub; its whole answer, or the exception it stands for."""
        url = f"{self.url}/api/storage/v{PROTOCOL}/{method}/"
        headers = self._headers
        if idempotent:
            headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        try:
            response = self._pool.request("POST", url, body=json.dumps(args), headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise HubError(f"cannot reach the hub at {self.url}: {e}") from e
        return _answer(method, response)


def _answer(method: str, response: urllib3.BaseHTTPResponse) -> Any:
    try:
        data = json.loads(response.data)
    except ValueError:
        data = None
    if response.status == 200 and isinstance(data, dict) and "result" in data:
        return data
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        detail = data["detail"]
        if response.status == 401:
            raise HubPermissionError(f"the hub refused the token: {detail}")
        raise ERRORS.get(data.get("error", ""), HubError)(detail)
    text = response.data[:200].decode(errors="replace")
    raise HubError(f"{method}: the hub answered HTTP {response.status}: {text!r}")
