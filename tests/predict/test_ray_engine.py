"""Scoring on a Ray cluster (``--engine ray``) against the local engine, on a real archive: Kermany JPEGs, the
SIIM chest DICOM without an extension, a truncated JPEG and a non-chest DICOM (CT). One local cluster of 2 CPUs
is started per module (start-up costs seconds)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from radiolens.errors import MissingExtraError
from radiolens.predict import PredictConfig, discover
from radiolens.predict.ray_engine import RayOptions, ScoringActor, import_ray, score_with_ray
from radiolens.predict.spec import ScorerSpec

ray = pytest.importorskip("ray")

CFG = {"workers": 0, "progress": False}
NON_CHEST = "693_UNCR.dcm"  # a CT slice: readable, refused by the input gate's header rules
TWO_ACTORS = RayOptions(num_actors=2, cpus_per_actor=0.5, cpus_per_decode_task=0.5)  # both fit on 2 CPUs


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(real_tree, pydicom_data_files, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray_archive") / "in"
    shutil.copytree(real_tree, root)
    (root / "ct").mkdir()
    shutil.copy(next(p for p in pydicom_data_files if p.name == NON_CHEST), root / "ct" / "slice.dcm")
    return root


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def local_reference(archive, fitted_pt, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local") / "r.parquet"
    ScorerSpec(fitted_pt, PredictConfig(batch_size=8, **CFG), threads=1).build().run(discover(archive), out)
    return _rows(out)


def _check_reference(ref: pd.DataFrame) -> None:
    """The archive's cases are all there: scored JPEGs and DICOM, the truncated JPEG an error, the CT refused."""
    by_path = ref.set_index("path")
    assert len(ref) == 39 and ref.path.is_unique
    assert by_path.loc["normal/zz_corrupt.jpeg", "status"] == "error"
    assert by_path.loc["ct/slice.dcm", "status"] == "out_of_distribution"
    assert by_path.loc["pacs/study1/series1/IM0001", "status"] == "ok"
    assert (ref.status == "ok").sum() == 37


def test_ray_rows_equal_local_rows(cluster, archive, fitted_pt, local_reference, tmp_path):
    _check_reference(local_reference)
    out = tmp_path / "ray.parquet"
    spec = ScorerSpec(fitted_pt, PredictConfig(batch_size=8, **CFG))
    summary = score_with_ray(spec, discover(archive), out, TWO_ACTORS)
    assert (summary.total, summary.scored, summary.errors, summary.not_assessed) == (39, 37, 1, 1)
    pd.testing.assert_frame_equal(_rows(out), local_reference)  # every column, every value, NaN in place
    assert not out.with_name(out.name + ".parts").exists()  # merged into one file

    again = score_with_ray(spec, discover(archive), out, TWO_ACTORS)  # a re-run: the error row is retried only
    assert (again.skipped_already_done, again.retried_errors, again.errors) == (38, 1, 1)
    pd.testing.assert_frame_equal(_rows(out), local_reference)


class DiesOnce(ScoringActor):
    """An inference actor whose process exits (as on an out-of-memory kill) in the middle of its 2nd batch, once
    per run: Ray must restart it and run that batch again."""

    def __init__(self, spec, marker: str):
        super().__init__(spec)
        self.marker, self.calls = Path(marker), 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(batch)


def test_a_killed_actor_s_batch_is_retried_and_written_once(cluster, archive, fitted_pt, local_reference, tmp_path):
    marker = tmp_path / "died"
    out = tmp_path / "ray.parquet"
    spec = ScorerSpec(fitted_pt, PredictConfig(batch_size=8, **CFG))

    class Actor(DiesOnce):
        def __init__(self, spec):
            super().__init__(spec, str(marker))

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

    summary = score_with_ray(spec, discover(archive), out, RayOptions(num_actors=1, cpus_per_actor=0.5,
                                                                       cpus_per_decode_task=0.5), actor_class=Actor)
    assert marker.exists()  # an actor process really died mid-run
    assert summary.scored + summary.errors + summary.not_assessed == 39
    pd.testing.assert_frame_equal(_rows(out), local_reference)


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(cluster, archive, fitted_pt, local_reference, tmp_path):
    """The command (the driver) is killed once the first batch is on disk; the next run completes the results
    without scoring a finished file again and without a duplicate row."""
    out = tmp_path / "ray.parquet"
    parts = out.with_name(out.name + ".parts")
    argv = [sys.executable, "-m", "radiolens.cli", "predict", str(archive), "--model", str(fitted_pt), "--out",
            str(out), "--engine", "ray", "--address", cluster, "--num-actors", "1", "--batch-size", "4",
            "--no-progress", "--workers", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (parts.is_dir() and any(parts.glob("part-*.parquet"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no batch was written"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    written = pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("part-*.parquet"))])
    assert 0 < len(written) < 39 and written.path.is_unique
    spec = ScorerSpec(fitted_pt, PredictConfig(batch_size=4, **CFG))
    summary = score_with_ray(spec, discover(archive), out, RayOptions(num_actors=1))
    assert summary.skipped_already_done == len(written)
    assert summary.scored + summary.errors + summary.not_assessed == 39 - len(written)
    pd.testing.assert_frame_equal(_rows(out), local_reference)


def test_without_ray_the_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"radiolens\[distributed\]"):
        import_ray()


def test_options_are_checked_before_anything_runs():
    from radiolens.errors import ConfigError

    with pytest.raises(ConfigError, match="num-actors"):
        RayOptions(num_actors=0)
    with pytest.raises(ConfigError, match="gpus-per-actor"):
        RayOptions(gpus_per_actor=-1)


def test_a_gpu_device_is_used_when_present_and_refused_in_words_when_not(fitted_pt, archive):
    """GPU actors load their backend with device="cuda": where PyTorch sees no GPU that is a typed error (the
    actor fails at start, not at the first batch); where it sees one, the GPU gives the CPU's probabilities."""
    import numpy as np
    import torch

    from radiolens.errors import ModelError
    from radiolens.models.backends import load_backend
    from radiolens.predict.sources import load_preprocessed

    with pytest.raises(ModelError, match="unknown device 'gpu'"):
        load_backend(fitted_pt, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="sees no CUDA GPU"):
            load_backend(fitted_pt, device="cuda")
        return
    cpu = load_backend(fitted_pt)
    x, _ = load_preprocessed(discover(archive)[:8], cpu.info)
    np.testing.assert_allclose(load_backend(fitted_pt, device="cuda").predict_proba(x), cpu.predict_proba(x),
                               atol=1e-4)


def test_ray_options_without_the_ray_engine_are_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from radiolens.cli import app

    res = CliRunner().invoke(app, ["predict", str(tmp_path), "--model", str(tmp_path / "missing.pt"), "--out",
                                   str(tmp_path / "r.parquet"), "--num-actors", "2"])
    assert res.exit_code != 0 and "need --engine ray" in res.output, res.output
    assert not (tmp_path / "r.parquet").exists()
