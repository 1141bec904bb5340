import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_snakemake(workdir, *args, check=True):
    """Run the real workflow in ``workdir`` with the repository's Snakefile and config."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(REPO / "config.yaml"), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir, *args):
    """Rule -> number of jobs Snakemake would run now (dry run)."""
    out = run_snakemake(workdir, "-n", *args).stdout
    jobs = {}
    if "Job stats:" in out:
        table = out.split("Job stats:", 1)[1].split("total", 1)[0]
        for line in table.splitlines():
            match = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
            if match and match.group(1) != "job":
                jobs[match.group(1)] = int(match.group(2))
    return jobs


def shared(name):
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real image {name} not available (expected in {SHARED_DATA})")
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The bundled demo, run once through the whole workflow."""
    workdir = tmp_path_factory.mktemp("demo_run")
    run_snakemake(workdir)
    return workdir
