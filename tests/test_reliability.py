"""Crash safety and untouched raw data: a run killed mid-way (SIGKILL of its whole process
group) resumes to the results of an uninterrupted run, and the raw inputs are byte for byte what
they were; a single analysis killed (what an out-of-memory killer or a wall-time limit does) costs
that sample only, and the study tables are written from the others."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from conftest import REPO, run_snakemake
from test_bad_input import _good_fluorescence, _good_section

KILLED = "error: analysis did not finish (killed: out of memory or time limit?)"


def _digests(folder: Path) -> dict:
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _snakemake(workdir, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
         "--configfile", str(REPO / "config.yaml"), "--cores", "2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(condition, process, what, timeout=600):
    """Poll ``condition()`` until it gives a value; fail (not skip) if the run ends first. The
    timeout only bounds a hung run: nothing is timed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{process.stdout.read()[-4000:]}")
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"no {what} within {timeout} s")


def _processes(session):
    """pid -> (parent pid, command line) of every process of ``session`` (the run's: only
    processes this test started are ever killed)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session:
            found[int(entry)] = (int(fields[1]), cmdline)
    return found


def _analysis(process, script):
    """``(job pid, field pid)`` of a running ``script`` job of the run ``process`` whose field child
    has started, or ``None`` (a field's process is a fork of its job's: the same command line, the
    job as its parent)."""
    table = _processes(process.pid)
    for pid, (ppid, cmdline) in table.items():
        if script in cmdline and ppid in table and script in table[ppid][1]:
            return ppid, pid
    return None


def _job(process, script):
    return next((pid for pid, (_, cmd) in _processes(process.pid).items() if script in cmd), None)


def test_killed_run_resumes_to_the_same_results_and_raw_data_is_untouched(demo_run, tmp_path):
    subprocess.run([sys.executable, "-m", "exotrack.cli", "demo", str(tmp_path / "demo")], check=True,
                   capture_output=True)
    before = _digests(tmp_path / "demo")
    total = len(list((demo_run / "results").glob("*/*/metrics.json")))
    process = _snakemake(tmp_path)
    metrics = tmp_path / "results"
    # Killed once some samples are done and others are not, whenever that is on this machine.
    _wait_for(lambda: 0 < len(list(metrics.glob("*/*/metrics.json"))) < total, process, "a finished sample")
    os.killpg(process.pid, signal.SIGKILL)  # the workflow and every job it started
    process.wait()
    done_before_kill = len(list(metrics.glob("*/*/metrics.json")))
    assert 0 < done_before_kill < total, "the kill should land mid-run"
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


def _fields(tmp_path, n, extra=()):
    rows = []
    for i in range(n):
        _good_fluorescence(tmp_path / f"f{i}.ome.tif")
        rows.append({"sample": f"f{i}", "modality": "fluorescence", "path": f"f{i}.ome.tif", "group": "A",
                     "subject": f"s{i}"})
    pd.DataFrame(rows + list(extra)).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)


def _statuses(tmp_path):
    return pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")["status"]


def test_field_killed_for_its_memory_costs_that_field_only(tmp_path):
    """The kernel's out-of-memory killer kills the process holding the memory: one field's."""
    _fields(tmp_path, 4)
    process = _snakemake(tmp_path, "--config", "samples=samples.tsv", "batch_size=10")
    _, field = _wait_for(lambda: _analysis(process, "analyse_fluorescence.py"), process, "a field's analysis")
    os.kill(field, signal.SIGKILL)
    log = process.communicate()[0]
    assert process.returncode == 0, log
    status = _statuses(tmp_path)
    assert (status == KILLED).sum() == 1 and (status == "ok").sum() == 3, status
    for name in ("subjects", "groups"):
        assert (tmp_path / "results" / "tables" / f"{name}.csv").exists()
    killed = status.index[status == KILLED][0]
    assert (tmp_path / "results" / "qc" / f"{killed}.png").stat().st_size > 0


def test_batch_job_killed_whole_is_retried_without_the_field_it_died_in(tmp_path):
    """A wall-time limit kills the job and its field; the retry loses that field only."""
    _fields(tmp_path, 4)
    process = _snakemake(tmp_path, "--config", "samples=samples.tsv", "batch_size=10")
    job, field = _wait_for(lambda: _analysis(process, "analyse_fluorescence.py"), process, "a field's analysis")
    os.kill(job, signal.SIGKILL)
    os.kill(field, signal.SIGKILL)
    log = process.communicate()[0]
    assert process.returncode == 0, log
    status = _statuses(tmp_path)
    assert (status == KILLED).sum() == 1 and (status == "ok").sum() == 3, status
    assert not list((tmp_path / "logs").rglob("*.progress"))  # the retry finished its batch


def test_study_tables_are_written_when_a_job_is_lost(tmp_path):
    """Out of retries, a killed histology job leaves no result: the run fails, and the study
    tables are still written from every other sample, the lost one marked."""
    _good_section(tmp_path / "h.tif")
    _fields(tmp_path, 2, extra=[{"sample": "h_one", "modality": "histology", "path": "h.tif", "group": "A",
                                 "subject": "s0", "marker": "CD206"}])
    process = _snakemake(tmp_path, "--config", "samples=samples.tsv", "--retries", "0")
    job = _wait_for(lambda: _job(process, "analyse_histology.py"), process, "the histology job")
    os.kill(job, signal.SIGKILL)
    log = process.communicate()[0]
    assert process.returncode != 0, log
    assert "1 sample(s) did not finish; the study tables" in log, log
    status = _statuses(tmp_path)
    assert status["h_one"] == KILLED and (status[["f0", "f1"]] == "ok").all(), status
    for name in ("subjects", "groups"):
        assert (tmp_path / "results" / "tables" / f"{name}.csv").exists()
    # The next run analyses the lost sample and rewrites the tables.
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    assert (_statuses(tmp_path) == "ok").all()


def test_default_profile_retries_a_killed_job():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    assert profile["retries"] >= 1 and profile["keep-going"]
