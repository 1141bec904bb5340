import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

REPO = Path(__file__).resolve().parents[1]

# Hypothesis: in CI the same examples every run (derandomized, no example database), so that a
# red run is reproducible; locally random, its database under .pytest_cache, not the repo root.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", database=DirectoryBasedExampleDatabase(REPO / ".pytest_cache" / "hypothesis"))
settings.load_profile("ci" if os.environ.get("CI") else "dev")
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
    """A real image of ../shared/data. Absent, its test is skipped, except in CI (``CI`` set),
    where ../shared is beside the clone: there a missing image fails the test, so that real-data
    tests cannot vanish from a green run."""
    path = shared_if_present(name)
    if path is None:
        pytest.skip(f"real image {name} not available (expected in {SHARED_DATA})")
    return path


def shared_if_present(name):
    """The real image's path, or ``None`` where it is absent (never in CI: there it fails)."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real image {name} not found in {SHARED_DATA}: CI must have ../shared/data "
                        "beside the clone")
        return None
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The bundled demo, run once through the whole workflow."""
    workdir = tmp_path_factory.mktemp("demo_run")
    run_snakemake(workdir)
    return workdir
