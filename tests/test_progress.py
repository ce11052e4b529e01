"""Progress bars: on for the CLI (``--progress``, or stderr being a terminal), off for the library, and never on
stdout (a command's stdout stays parseable)."""

from __future__ import annotations

import re
import time

import pytest
from typer.testing import CliRunner

from radiolens import progress
from radiolens.cli import app


@pytest.fixture(autouse=True)
def _off_afterwards():
    yield
    progress.enable(False)


def test_track_passes_items_through_and_draws_only_when_enabled(capsys):
    progress.enable(False)
    assert list(progress.track(iter(range(5)), "x")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    progress.enable(True)

    def slow():
        for i in range(3):
            time.sleep(0.15)  # past tqdm's 0.1 s redraw interval, so the bar shows counts and a rate
            yield i

    assert list(progress.track(slow(), "counting", total=3)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "counting" in err and re.search(r"[123]/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+img/s\]", err), err


def test_cli_progress_flag_draws_a_bar_with_rate_on_stderr_only(data_dir, tmp_path):
    images = sorted((data_dir / "kermany_pediatric_pneumonia" / "images").rglob("*.jpeg"))[:6]
    runner = CliRunner()
    shown = runner.invoke(app, ["--progress", "preview", *map(str, images), "-o", str(tmp_path / "a")])
    assert shown.exit_code == 0, shown.output
    assert "previews" in shown.stderr and "/6 [" in shown.stderr and "file/s" in shown.stderr
    assert "previews" not in shown.stdout
    quiet = runner.invoke(app, ["preview", *map(str, images), "-o", str(tmp_path / "b")])  # not a terminal
    assert quiet.exit_code == 0 and "previews" not in quiet.stderr
    assert not progress.enabled()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())


def test_deid_draws_a_bar_per_file(pydicom_data_files, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in pydicom_data_files[:4]:
        (src / p.name).write_bytes(p.read_bytes())
    r = CliRunner().invoke(app, ["--progress", "deid", str(src), str(tmp_path / "out"), "--secret",
                                 "progress-test-secret-123456"])
    assert "de-identifying" in r.stderr and "/4 [" in r.stderr and "file/s" in r.stderr, r.output
    assert "de-identifying" not in r.stdout
