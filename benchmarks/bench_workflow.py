"""Workflow overheads: many small fields, and planning a plate screen.

Run on demand:  python benchmarks/bench_workflow.py [--fields 200] [--side 512 256] [--samples 10000]

1. ``--fields`` small fluorescence fields through the real workflow with all cores, against their
   pure compute time (each field's ``process_sample`` timed in one process) divided by the cores:
   the ratio is what job start-up, scheduling and the study-level steps cost (target <= 1.5).
   First a real plate-screen field (BBBC022's ``IXMtest_A02_s9.tif``, 3 x 395 x 695, from
   ``../shared/data``, read in place by every row of the sheet), then synthetic fields of
   ``--side`` x ``--side`` x 3 pixels.
2. A dry run (``snakemake -n``) of a ``--samples`` sheet, all rows pointing at one small image:
   the time Snakemake takes to plan it (target <= 30 s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from exotrack.demo import CHANNELS, simulate_uptake_field
from exotrack.fluorescence import process_sample
from exotrack.io import write_ome_tiff

REPO = Path(__file__).resolve().parents[1]
PLATE_FIELD = REPO.parent / "shared" / "data" / "IXMtest_A02_s9.tif"
# As in tests/test_real_images.py: the field's pixel size and stains.
PLATE_ROW = {"channels": "nuclei=0;exosomes=2;cells=1", "pixel_size_um": "0.656"}
PLATE_OPTIONS = {"spot_diameter_um": 1.5, "nucleus_diameter_um": 12}


def snakemake(workdir: Path, *args) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                    "--configfile", str(REPO / "config.yaml"), "--cores", str(os.cpu_count()), "--quiet", "all",
                    "--config", "samples=samples.tsv", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def overhead(workdir: Path, rows: list[dict], options: dict, what: str) -> None:
    """``rows`` (sample sheet rows, paths relative to ``workdir``) through the workflow and directly."""
    pd.DataFrame(rows).to_csv(workdir / "samples.tsv", sep="\t", index=False)
    start = time.perf_counter()
    for row in rows:
        out = workdir / "direct" / row["sample"]
        outputs = {k: out / f"{k}.{e}" for k, e in [("cells", "csv"), ("puncta", "csv"), ("labels", "tif"),
                                                     ("nuclei", "tif"), ("metrics", "json"), ("qc", "png")]}
        process_sample(sample=row["sample"], path=workdir / row["path"], options=options, outputs=outputs,
                       channels=row.get("channels"), pixel_size_um=row.get("pixel_size_um"))
    compute = time.perf_counter() - start
    wall = snakemake(workdir, *([f"fluorescence={options}"] if options else []))
    ideal = compute / os.cpu_count()
    print(f"{len(rows)} {what}: workflow {wall:.1f} s vs compute {compute:.1f} s / {os.cpu_count()} cores = "
          f"{ideal:.1f} s: ratio {wall / ideal:.2f} (target <= 1.5)", flush=True)


def plate_fields(n_fields: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [{"sample": f"f{i}", "modality": "fluorescence", "path": str(PLATE_FIELD),
                 "group": "PBS" if i % 2 else "exosome", **PLATE_ROW} for i in range(n_fields)]
        overhead(Path(tmp), rows, PLATE_OPTIONS, "real plate fields (BBBC022, 3 x 395 x 695)")


def synthetic_fields(n_fields: int, side: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for i in range(n_fields):
            field = simulate_uptake_field(shape=(side, side), n_cells=3 * (side // 256) ** 2, puncta_per_cell=20,
                                          seed=i)
            write_ome_tiff(tmp / f"f{i}.ome.tif", field.image, axes="CYX", channel_names=CHANNELS,
                           pixel_size_um=field.pixel_size_um)
            rows.append({"sample": f"f{i}", "modality": "fluorescence", "path": f"f{i}.ome.tif",
                         "group": "PBS" if i % 2 else "exosome"})
        overhead(tmp, rows, {}, f"synthetic fields of 3 x {side} x {side}")


def planning(n_samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        field = simulate_uptake_field(shape=(256, 256), n_cells=3, seed=0)
        write_ome_tiff(tmp / "field.ome.tif", field.image, axes="CYX", channel_names=CHANNELS,
                       pixel_size_um=field.pixel_size_um)
        pd.DataFrame({"sample": [f"s{i:05d}" for i in range(n_samples)], "modality": "fluorescence",
                      "path": "field.ome.tif", "group": ["A", "B"] * (n_samples // 2) + ["A"] * (n_samples % 2)}
                     ).to_csv(tmp / "samples.tsv", sep="\t", index=False)
        seconds = snakemake(tmp, "-n")
    print(f"dry run of {n_samples} samples: {seconds:.1f} s (target <= 30 s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=200)
    parser.add_argument("--side", type=int, nargs="*", default=[512, 256])
    parser.add_argument("--samples", type=int, default=10000)
    args = parser.parse_args()
    if args.fields and PLATE_FIELD.exists():
        plate_fields(args.fields)
    for side in args.side if args.fields else []:
        synthetic_fields(args.fields, side)
    if args.samples:
        planning(args.samples)


if __name__ == "__main__":
    main()
