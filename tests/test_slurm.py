"""The demo through the `slurm` profile on a real single-node SLURM cluster (loopback, no
accounting database), against the local run."""
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, planned_jobs, run_snakemake
from slurm_cluster import local_cluster, missing


@pytest.fixture
def cluster(tmp_path_factory):
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a SLURM cluster: {reason} (see .ci/run)")
        pytest.skip(reason)
    with local_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


SLURM_COMMANDS = {"sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol", "scrontab",
                  "sdiag", "sinfo", "sprio", "squeue", "sreport", "srun", "sshare", "sstat", "strigger", "sview"}


def test_slurm_profile_plans_without_slurm(tmp_path, monkeypatch):
    """A dry run with the slurm profile on a machine without SLURM: the PATH is this machine's,
    less every SLURM command (the plugin itself probes for them with ``which``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if tool.name not in SLURM_COMMANDS:
                (bin_dir / tool.name).unlink(missing_ok=True)
                (bin_dir / tool.name).symlink_to(tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("sbatch") is None and shutil.which("which") is not None
    jobs = planned_jobs(tmp_path / "run", "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"))
    assert jobs.get("summarise_study") == 1 and sum(jobs.values()) > 10, jobs


def test_demo_on_slurm_equals_local_run(cluster, demo_run, tmp_path, monkeypatch):
    for key, value in cluster.items():
        monkeypatch.setenv(key, value)
    run_snakemake(tmp_path, "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"),
                  "--slurm-no-account", "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
                  "--default-resources", "slurm_partition=debug", "--slurm-keep-successful-logs")
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %j %T"], env=cluster, capture_output=True,
                          text=True, check=True).stdout.split("\n")
    jobs = [line.split() for line in jobs if line.strip()]
    # Every job went through sbatch and finished; 57 rule jobs became a handful of batches.
    assert jobs and all(state == "COMPLETED" for _, _, state in jobs), jobs
    assert len(jobs) <= 8, jobs
    local = pd.read_csv(demo_run / "results" / "tables" / "samples.csv")
    remote = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv")
    pd.testing.assert_frame_equal(remote, local, check_exact=False, rtol=1e-9)
    for table in ("groups", "subjects", "timecourse"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results" / "tables" / f"{table}.csv"),
                                      pd.read_csv(demo_run / "results" / "tables" / f"{table}.csv"),
                                      check_exact=False, rtol=1e-9)
