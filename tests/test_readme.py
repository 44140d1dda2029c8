"""The README's examples run as the README says to run them."""

from __future__ import annotations

import re
import subprocess

from studies.models import Study
from tests.conftest import BASE_DIR, PYTHON, subprocess_env

README = (BASE_DIR / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README[README.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_django_storage_example_runs_in_manage_py_shell(transactional_db):
    code = python_block_after("## How it works")
    assert "python3 manage.py shell < " in README  # how the README says to run it
    result = subprocess.run(
        [PYTHON, "manage.py", "shell"],
        input=code,
        cwd=BASE_DIR,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = Study.objects.get(name="demo")
    assert study.trials.count() == 100
