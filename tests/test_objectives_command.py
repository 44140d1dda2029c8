"""Command objectives: a program per trial, parameters in, values and reports out."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies.admin import CommandObjectiveForm
from studies.models import CommandObjective
from studies.objectives import RunContext
from studies.objectives.command import parse_line, render_argv
from studies.objectives.registry import check_command_objective, get_objective, get_objectives

JSON_FIELDS = ("argv", "directions", "search_space", "environment")
SPACE = {
    "x": {"type": "float", "low": -2, "high": 2},
    "kind": {"type": "categorical", "choices": ["a", "b"]},
    "extra": {"type": "int", "low": 1, "high": 3, "when": {"kind": ["b"]}},
}


def command(name: str, script: str, *args: str, **fields) -> CommandObjective:
    fields.setdefault("search_space", {"x": {"type": "float", "low": -2, "high": 2}})
    row = CommandObjective(name=name, argv=[sys.executable, "-c", script, *args], **fields)
    check_command_objective(row)
    row.save()
    return row


def run(name: str, n_trials: int = 1, *, context: RunContext | None = None, **kwargs):
    info = get_objective(name)
    study = optuna.create_study(directions=info.directions, **kwargs)
    study.optimize(info.make_objective(None, context), n_trials=n_trials, catch=(Exception,))
    return study


def test_argv_placeholders_take_the_trials_values_and_inactive_ones_drop_out():
    argv = ["train", "--x", "{x}", "--kind={kind}", "--extra={extra}", "{{literal}}"]
    assert render_argv(argv, {"x": 0.5, "kind": "a"}) == [
        "train",
        "--x",
        "0.5",
        "--kind=a",
        "{literal}",
    ]
    assert "--extra=2" in render_argv(argv, {"x": 0.5, "kind": "b", "extra": 2})


def test_the_output_protocol_is_value_values_and_report_lines():
    assert parse_line("value 0.25") == ("values", [0.25])
    assert parse_line("values 1 -2.5e3") == ("values", [1.0, -2500.0])
    assert parse_line("report 3 0.5") == ("report", (3, 0.5))
    assert parse_line("value inf") == ("values", [float("inf")])
    for other in ["epoch 3 loss 0.2", "value", "value x", "report 1.5 2", "Value 3", ""]:
        assert parse_line(other) is None


def test_a_command_trial_passes_parameters_as_arguments_and_environment(db):
    script = (
        "import json, os, sys\n"
        "x = float(sys.argv[1])\n"
        "assert float(os.environ['HUB_PARAM_X']) == x\n"
        "assert json.loads(os.environ['HUB_PARAMS'])['x'] == x\n"
        "assert 'SECRET_KEY' not in os.environ and 'DATABASE_URL' not in os.environ\n"
        "print('training...', os.environ['GREETING'])\n"
        "print('value', (x - 1) ** 2)\n"
    )
    command("parabola", script, "{x}", environment={"GREETING": "hello"})
    assert get_objectives()["parabola"].kind == "command"
    study = run("parabola", 3)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE, trial.system_attrs
        assert trial.value == pytest.approx((trial.params["x"] - 1) ** 2)
        assert trial.system_attrs["hub_output_tail"].startswith("training... hello")


def test_values_lines_feed_a_multi_objective_study(db):
    command("two", "import sys; x=float(sys.argv[1]); print('values', x, -x)", "{x}")
    CommandObjective.objects.filter(name="two").update(directions=["minimize", "maximize"])
    study = run("two", 2)
    assert all(t.values == [t.params["x"], -t.params["x"]] for t in study.trials)


def test_reports_go_to_the_pruner_and_a_pruned_trial_is_killed(db, tmp_path):
    marker = tmp_path / "finished"
    script = (
        "import sys, time\n"
        "for step in range(50):\n"
        "    print('report', step, 1.0, flush=True)\n"
        "    time.sleep(0.05)\n"
        f"open({str(marker)!r}, 'w').write('done')\n"
        "print('value 1.0')\n"
    )
    command("slow_and_bad", script)
    pruner = optuna.pruners.ThresholdPruner(upper=0.5)
    study = run("slow_and_bad", pruner=pruner)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {0: 1.0}
    time.sleep(0.3)
    assert not marker.exists()  # the process was killed, not left to finish


def test_a_trial_that_runs_past_its_timeout_is_killed_and_fails(db):
    command("sleeper", "import time; time.sleep(30); print('value 1')", timeout=0.5)
    started = time.monotonic()
    study = run("sleeper")
    assert time.monotonic() - started < 10
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL


def test_a_stopped_job_kills_its_running_command(db, tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
    script += "time.sleep(30)"
    command("forever", script)
    stop_at = time.monotonic() + 1.0
    context = RunContext(job_id=None, should_stop=lambda: time.monotonic() > stop_at)
    study = run("forever", context=context)
    assert study.trials[0].state == TrialState.FAIL
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_failing_command_fails_the_trial_and_keeps_its_output(db):
    command("broken", "import sys; print('loading data'); sys.exit('no such file: data.csv')")
    command("silent", "print('I forgot to print the value')")
    study = run("broken")
    assert study.trials[0].state == TrialState.FAIL
    tail = study.trials[0].system_attrs["hub_output_tail"]
    assert "loading data" in tail and "no such file: data.csv" in tail
    assert run("silent").trials[0].state == TrialState.FAIL


def test_the_output_tail_keeps_only_the_last_lines(db):
    command("chatty", "for i in range(500): print('line', i)\nprint('value 0')")
    tail = run("chatty").trials[0].system_attrs["hub_output_tail"].splitlines()
    assert tail[-1] == "value 0" and tail[-2] == "line 499" and len(tail) == 50


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"argv": []}, "argv", "non-empty list"),
        ({"argv": "python3 train.py"}, "argv", "non-empty list"),
        ({"argv": ["python3", "train.py", "--lr", "{lr}"]}, "argv", "{lr} names no parameter"),
        ({"name": "sphere"}, "name", "already a built-in"),
        ({"name": "has space"}, "name", "letters, digits"),
        ({"directions": ["up"]}, "directions", "must be a list like"),
        ({"search_space": {"x": {"type": "float", "low": 2, "high": 1}}}, "search_space", ""),
        ({"environment": {"A": 1}}, "environment", "string values"),
        ({"working_directory": "relative/dir"}, "working_directory", "absolute"),
        ({"timeout": 0}, "timeout", "greater than 0"),
    ],
)
def test_the_admin_rejects_an_invalid_command_objective(db, fields, field, message):
    values = {
        "name": "train",
        "argv": ["python3", "train.py", "--x", "{x}"],
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
    }
    data = {"directions": ["minimize"], "timeout": 3600, "enabled": True, **values, **fields}
    form = CommandObjectiveForm(
        {key: json.dumps(v) if key in JSON_FIELDS else v for key, v in data.items()}
    )
    assert not form.is_valid()
    assert field in form.errors
    assert message in " ".join(form.errors[field])


def test_staff_register_a_command_objective_in_the_admin(client, staff, tmp_path):
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="commandobjective"))
    client.force_login(staff)
    response = client.post(
        "/admin/studies/commandobjective/add/",
        {
            "name": "train_net",
            "description": "A small net",
            "argv": json.dumps(["python3", "train.py", "--lr", "{lr}"]),
            "directions": json.dumps(["maximize"]),
            "search_space": json.dumps({"lr": {"type": "float", "low": 1e-4, "high": 1}}),
            "working_directory": str(tmp_path),
            "environment": json.dumps({"CUDA_VISIBLE_DEVICES": "0"}),
            "timeout": "600",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    row = CommandObjective.objects.get(name="train_net")
    assert row.argv == ["python3", "train.py", "--lr", "{lr}"]
    assert get_objectives()["train_net"].directions == ["maximize"]

    response = client.post(
        "/admin/studies/commandobjective/add/",
        {
            "name": "bad",
            "argv": json.dumps(["python3", "train.py", "--lr", "{learning_rate}"]),
            "directions": json.dumps(["maximize"]),
            "search_space": json.dumps({"lr": {"type": "float", "low": 1e-4, "high": 1}}),
            "timeout": "600",
        },
    )
    assert response.status_code == 200
    assert "{learning_rate} names no parameter" in response.content.decode()
    assert not CommandObjective.objects.filter(name="bad").exists()


def test_a_disabled_command_objective_is_not_offered(db):
    command("off", "print('value 1')", enabled=False)
    assert get_objective("off") is None and "off" not in get_objectives()


def test_a_declared_space_must_define_the_commands_placeholders(db):
    command("needs_x", "print('value 1')", "{x}")
    info = get_objective("needs_x")
    with pytest.raises(Exception) as e:
        info.validate_for(["minimize"], {"y": {"type": "float", "low": 0, "high": 1}})
    assert "{x} names no parameter" in str(e.value)


def test_the_working_directory_is_where_the_command_runs(db, tmp_path: Path):
    (tmp_path / "train.py").write_text("print('value', 42)")
    row = CommandObjective(
        name="in_dir",
        argv=[sys.executable, "train.py"],
        working_directory=str(tmp_path),
        search_space={"x": {"type": "float", "low": 0, "high": 1}},  # required now
    )
    check_command_objective(row)
    row.save()
    assert run("in_dir").best_value == 42
