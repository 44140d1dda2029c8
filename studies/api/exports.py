"""Every trial of a study as CSV or JSON, streamed a thousand rows at a time.

The status line and headers leave before the rows, so an error while
streaming cannot become a 500. The rows are made so that none can fail
(json_safe is iterative, stored values are within HUB_MAX_JSON_DEPTH); should
one fail anyway (a row the database cannot decode), the error is logged and
re-raised, and the server breaks off the chunked response: the client sees a
broken transfer, never a complete-looking file that stops early. What is read
before the first byte (JSON: the first trial; CSV: every trial's attributes,
for the columns) fails as an error status instead.

Speed (a study of 100 000 trials in seconds, not minutes): rows are read with
plain SQL in pages of EXPORT_CHUNK by trial number, decoded as the storage
decodes them, and encoded with orjson unless a row holds what only the standard
module encodes as the hub does (non-finite numbers as text, integers past 64
bits, nesting past orjson's limit).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from django.db import connection

from studies.models import Study, json_safe
from studies.storage.codec import (
    STATES,
    TRIAL_TABLE,
    distributions_of,
    loads,
    loads_numbers,
    to_utc,
)

logger = logging.getLogger(__name__)

# Spreadsheets run a cell that starts with one of these as a formula (CSV
# injection); OWASP's advice is to prefix such a cell with a quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXPORT_CHUNK = 1000  # rows per query and per chunk of the response
COLUMNS = 'id, number, state, "values", params, distributions, intermediate_values, user_attrs'
COLUMNS += ", datetime_start, datetime_complete"


def _chunks(study: Study) -> Iterator[list[tuple[Any, ...]]]:
    """The study's trial rows by number, EXPORT_CHUNK at a time (each an index range)."""
    last = -1
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {COLUMNS} FROM {TRIAL_TABLE} WHERE study_id = %s AND number > %s "
                "ORDER BY number LIMIT %s",
                [study.pk, last, EXPORT_CHUNK],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][1]


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A trial row as the API shows a trial (TrialSerializer's fields, in its order)."""
    trial_id, number, state, values, params, dists, steps, attrs, start, complete = row
    _, external = distributions_of(dists)
    start, complete = to_utc(start), to_utc(complete)
    return {
        "trial_id": trial_id,
        "number": number,
        "state": STATES[state].name,
        "values": None if values is None else loads_numbers(values),
        "params": {name: external[name](v) for name, v in loads_numbers(params).items()},
        "intermediate_values": loads_numbers(steps),
        "datetime_start": _iso(start) or None,
        "datetime_complete": _iso(complete) or None,
        "duration": (complete - start).total_seconds() if start and complete else None,
        "user_attrs": loads(attrs),
    }


def _plain(row: tuple[Any, ...]) -> bool:
    """Whether the row holds no non-finite number (Python writes them as NaN, Infinity)."""
    return not any(isinstance(t, str) and ("NaN" in t or "Infinity" in t) for t in row[3:8])


def _json(row: tuple[Any, ...]) -> bytes:
    record = _record(row)
    if _plain(row):
        try:
            return orjson.dumps(record)
        except orjson.JSONEncodeError:
            pass  # an integer past 64 bits, nesting past orjson's limit
    return json.dumps(json_safe(record), allow_nan=False).encode()


def json_rows(study: Study) -> Iterator[bytes]:
    number = None  # the last trial sent, for the log
    try:
        chunks = _chunks(study)
        first = next(chunks, [])
        # Before the first byte: an error here is still an error status.
        yield b"[" + (_json(first[0]) if first else b"")
        number = first[0][1] if first else None
        for chunk in itertools.chain([first[1:]], chunks):
            if chunk:
                encoded = b",".join([_json(row) for row in chunk])
                yield b"," + encoded
                number = chunk[-1][1]
    except Exception:
        if number is None:
            _log_broken("json", study, "before its first byte (the client gets an error status)")
        else:
            _log_broken("json", study, f"after trial {number} (the transfer is broken off)")
        raise
    yield b"]"


def csv_rows(study: Study) -> Iterator[str]:
    # Columns as in optuna's trials_dataframe: a value column per objective,
    # then a column per parameter and user attribute seen in any trial. Every
    # parameter name is recorded on the study; attributes are read before the
    # first byte (only rows that have any).
    params: dict[str, None] = dict.fromkeys(study.search_space)
    params.update(dict.fromkeys(study.param_distributions))
    attrs: dict[str, None] = {}
    # A chunked iterator: attributes may be up to HUB_MAX_USER_ATTRS_BYTES per trial.
    with_attrs = study.trials.exclude(user_attrs={}).order_by("number")
    for trial_attrs in with_attrs.values_list("user_attrs", flat=True).iterator(chunk_size=1000):
        attrs.update(dict.fromkeys(trial_attrs))
    if study.is_multi_objective:
        value_columns = [f"values_{i}" for i in range(len(study.directions))]
    else:
        value_columns = ["value"]
    header = ["number", "trial_id", "state", *value_columns, "datetime_start"]
    header += ["datetime_complete", "duration"]
    header += [f"params_{n}" for n in params] + [f"user_attrs_{k}" for k in attrs]

    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def text() -> str:
        out = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return out

    writer.writerow([neutralise(name) for name in header])
    yield text()
    number = None
    try:
        for chunk in _chunks(study):
            for row in chunk:
                trial = _record(row)
                values = (trial["values"] if _plain(row) else json_safe(trial["values"])) or []
                line: list[Any] = [trial["number"], trial["trial_id"], trial["state"]]
                line += [values[i] if i < len(values) else "" for i in range(len(value_columns))]
                line += [trial["datetime_start"] or "", trial["datetime_complete"] or ""]
                line += ["" if trial["duration"] is None else trial["duration"]]
                # Raw values: a float -inf is the number "-inf", a string "-inf" is text.
                line += [cell(trial["params"].get(n)) for n in params]
                line += [cell(trial["user_attrs"].get(k)) for k in attrs]
                writer.writerow(line)
            number = chunk[-1][1]
            yield text()
    except Exception:
        after = "the header" if number is None else f"trial {number}"
        _log_broken("csv", study, f"after {after} (the transfer is broken off)")
        raise


def _iso(dt: Any) -> str:
    return dt.isoformat() if dt else ""


def cell(value: Any) -> Any:
    """A parameter or attribute as a CSV cell: containers as JSON, text made inert."""
    if isinstance(value, dict | list):
        return json.dumps(json_safe(value))  # starts with { or [: never a formula
    if isinstance(value, str):
        return neutralise(value)
    return "" if value is None else value


def neutralise(text: str) -> str:
    """``'=HYPERLINK(...)`` for ``=HYPERLINK(...)``: shown as text, not run as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _log_broken(kind: str, study: Study, where: str) -> None:
    logger.exception("trials.%s of study %s failed %s", kind, study.pk, where)
