"""The client package (client/) as a wheel the hub serves, built from its sources.

Machines that can reach the hub but not the repository install the client with
``pip install <hub>/client/<wheel>``. The wheel is made here, in memory, from
client/pyproject.toml and the package's files, so serving it needs no build
tool at run time; its contents are the same as ``pip wheel client/`` makes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import tomllib
import zipfile
from pathlib import Path

from django.conf import settings

CLIENT_DIR = Path(settings.BASE_DIR) / "client"
# Zip entries get a fixed date, so the same sources always make the same bytes.
FIXED_DATE = (2020, 1, 1, 0, 0, 0)


def project() -> dict:
    return tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]


def wheel_name() -> str:
    meta = project()
    return f"{meta['name'].replace('-', '_')}-{meta['version']}-py3-none-any.whl"


def _metadata(meta: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {meta['name']}",
        f"Version: {meta['version']}",
        f"Summary: {meta['description']}",
        f"Requires-Python: {meta['requires-python']}",
        *(f"Classifier: {c}" for c in meta.get("classifiers", [])),
        *(f"Requires-Dist: {d}" for d in meta["dependencies"]),
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + (CLIENT_DIR / meta["readme"]).read_text()


@functools.cache
def build_wheel() -> bytes:
    """The client's wheel (built once per process; the sources change with a release)."""
    meta = project()
    package = CLIENT_DIR / "optuna_hub_client"
    dist_info = f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    files = {
        f"optuna_hub_client/{path.relative_to(package)}": path.read_bytes()
        for path in sorted(package.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".typed")
    }
    files[f"{dist_info}/METADATA"] = _metadata(meta).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: optuna-hub\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(zipfile.ZipInfo(name, FIXED_DATE), data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        record_info = zipfile.ZipInfo(f"{dist_info}/RECORD", FIXED_DATE)
        wheel.writestr(record_info, "\n".join(record) + "\n", zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
