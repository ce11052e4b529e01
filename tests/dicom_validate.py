"""Validate DICOM that radiolens writes with ``dciodvfy`` (dicom3tools, Debian package ``dicom3tools``).

``dciodvfy`` checks a file against the IOD of its SOP class and every value against its VR. Its ``Error``
lines are violations; its ``Warning`` lines are tolerated, because on the real test files they are about
things radiolens does not introduce and should not "fix" by guessing: retired attributes and group lengths,
attributes outside the IOD (a Standard Extended SOP Class, allowed by PS3.4), retired person-name forms of
names already in the source, and values that DICOMDIR building would need.

Real files are not all valid to begin with (pydicom-data's RG1 has a zero Pixel Spacing, SIIM a 2-character
Patient's Age), so a written file is compared with the file it was made from: it must not have an error the
source did not have. Values are dropped from the messages before comparing (a de-identified value differs
from the original one, the rule it breaks does not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

_VALUE = re.compile(r"= <[^>]*>")


def dciodvfy_path() -> str:
    found = shutil.which("dciodvfy")
    if not found:
        pytest.fail("dciodvfy not found: install Debian's dicom3tools (scripts/install-system-deps.sh); "
                    "DICOM validation tests fail rather than skip")
    return found


def dciodvfy_errors(path: str | Path) -> set[str]:
    """The ``Error`` lines dciodvfy reports for ``path``, values blanked."""
    run = subprocess.run([dciodvfy_path(), str(path)], capture_output=True, text=True, errors="replace",
                         timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return {_VALUE.sub("= <>", line.strip()) for line in lines if line.strip().startswith("Error")}


def new_dciodvfy_errors(written: str | Path, source: str | Path | None = None) -> set[str]:
    """Errors in ``written`` that ``source`` (when given) did not have."""
    errors = dciodvfy_errors(written)
    return errors - dciodvfy_errors(source) if source is not None else errors


def assert_valid_dicom(written: str | Path, source: str | Path | None = None) -> None:
    added = new_dciodvfy_errors(written, source)
    assert not added, f"dciodvfy: {Path(written).name} has errors its source did not have: {sorted(added)}"
