"""Every trial of a study as CSV or JSON, streamed row by row.

The status line and headers leave before the rows, so an error while
streaming cannot become a 500. The rows are made so that none can fail
(json_safe is iterative, stored values are within HUB_MAX_JSON_DEPTH); should
one fail anyway (a row the database cannot decode), the error is logged and
re-raised, and the server breaks off the chunked response: the client sees a
broken transfer, never a complete-looking file that stops early. What is read
before the first byte (JSON: the first trial; CSV: every trial's parameters and
attributes, for the columns) fails as an error status instead.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from studies.api.serializers import TrialSerializer
from studies.models import Study, Trial, json_safe

logger = logging.getLogger(__name__)

# Spreadsheets run a cell that starts with one of these as a formula (CSV
# injection); OWASP's advice is to prefix such a cell with a quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _trials(study: Study) -> Iterator[Trial]:
    return study.trials.order_by("number").iterator(chunk_size=1000)


def json_rows(study: Study) -> Iterator[str]:
    serializer = TrialSerializer()
    number = None  # the last trial encoded, for the log
    try:
        trials = _trials(study)
        first = next(trials, None)
        # Before the first byte: an error here is still an error status.
        head = "[" if first is None else "[" + _json(serializer, first)
        number = None if first is None else first.number
        yield head
        for trial in trials:
            row = "," + _json(serializer, trial)
            number = trial.number
            yield row
    except Exception:
        if number is None:
            _log_broken("json", study, "before its first byte (the client gets an error status)")
        else:
            _log_broken("json", study, f"after trial {number} (the transfer is broken off)")
        raise
    yield "]"


def _json(serializer: TrialSerializer, trial: Trial) -> str:
    return json.dumps(serializer.to_representation(trial), allow_nan=False)


def csv_rows(study: Study) -> Iterator[str]:
    # Columns as in optuna's trials_dataframe: a value column per objective,
    # then a column per parameter and user attribute seen in any trial. Reading
    # them reads every row before the first byte.
    params: dict[str, None] = dict.fromkeys(study.search_space)
    attrs: dict[str, None] = {}
    # A chunked iterator: attributes may be up to HUB_MAX_USER_ATTRS_BYTES per trial.
    columns = study.trials.values_list("params", "user_attrs").iterator(chunk_size=1000)
    for trial_params, trial_attrs in columns:
        params.update(dict.fromkeys(trial_params))
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

    def line(row: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    yield line([neutralise(name) for name in header])
    number = None
    try:
        for trial in _trials(study):
            values = json_safe(trial.values) or []
            row: list[Any] = [trial.number, trial.pk, trial.state_name]
            row += [values[i] if i < len(values) else "" for i in range(len(value_columns))]
            duration = trial.duration
            row += [_iso(trial.datetime_start), _iso(trial.datetime_complete)]
            row += ["" if duration is None else duration]
            # Raw values: a float -inf is the number "-inf", a string "-inf" is text.
            external = trial.external_params()
            row += [cell(external.get(n)) for n in params]
            row += [cell(trial.user_attrs.get(k)) for k in attrs]
            text = line(row)
            number = trial.number
            yield text
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
