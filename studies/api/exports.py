"""Every trial of a study as CSV or JSON, streamed row by row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from studies.api.serializers import TrialSerializer
from studies.models import Study, Trial


def _trials(study: Study) -> Iterator[Trial]:
    return study.trials.order_by("number").iterator(chunk_size=1000)


def json_rows(study: Study) -> Iterator[str]:
    yield "["
    serializer = TrialSerializer()
    for i, trial in enumerate(_trials(study)):
        data = serializer.to_representation(trial)
        yield ("," if i else "") + json.dumps(data, allow_nan=False)
    yield "]"


def csv_rows(study: Study) -> Iterator[str]:
    # Columns as in optuna's trials_dataframe: a value column per objective,
    # then a column per parameter and user attribute seen in any trial.
    params: dict[str, None] = dict.fromkeys(study.search_space)
    attrs: dict[str, None] = {}
    for trial_params, trial_attrs in study.trials.values_list("params", "user_attrs"):
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

    yield line(header)
    serializer = TrialSerializer()
    for trial in _trials(study):
        data = serializer.to_representation(trial)
        values = data["values"] or []
        row = [data["number"], data["trial_id"], data["state"]]
        row += [values[i] if i < len(values) else "" for i in range(len(value_columns))]
        row += [data["datetime_start"], data["datetime_complete"], data["duration"]]
        row += [cell(data["params"].get(n)) for n in params]
        row += [cell(data["user_attrs"].get(k)) for k in attrs]
        yield line(row)


def cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value
