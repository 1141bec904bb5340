"""Crash safety and untouched raw data: a run killed mid-way (SIGKILL of its whole process
group) resumes to the results of an uninterrupted run, and the raw inputs are byte for byte what
they were."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from conftest import REPO, run_snakemake


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_run_resumes_to_the_same_results_and_raw_data_is_untouched(demo_run, tmp_path):
    subprocess.run([sys.executable, "-m", "exotrack.cli", "demo", str(tmp_path / "demo")], check=True,
                   capture_output=True)
    before = _digests(tmp_path / "demo")
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(REPO / "config.yaml"), "--cores", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "results"
    deadline = time.monotonic() + 120
    while len(list(metrics.glob("*/*/metrics.json"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the workflow and every job it started
    process.wait()
    done_before_kill = len(list(metrics.glob("*/*/metrics.json")))
    assert 10 <= done_before_kill < 47, "the kill should land mid-run"
    assert not (tmp_path / "results" / "tables" / "samples.csv").exists()

    # As a user resumes: release the dead run's lock, run again; the default profile reruns the
    # jobs the kill left incomplete.
    run_snakemake(tmp_path, "--unlock")
    run_snakemake(tmp_path)
    for table in ("samples", "subjects", "groups", "timecourse"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "tables" / f"{table}.csv"),
                                      pd.read_csv(demo_run / "results" / "tables" / f"{table}.csv"),
                                      check_exact=False, rtol=1e-9)
    # Every final CSV is whole: it parses and has its header (atomic writes).
    for path in (tmp_path / "results").rglob("*.csv"):
        assert pd.read_csv(path).columns.size > 0, path
    assert _digests(tmp_path / "demo") == before
