"""The lymph node in B-mode / PA volumes the analyser did not make: a randomised family
(``simulate_family``: its own speckle, compression, gel, voxels, 2-D frames and 3-D sweeps, nodes
of 0.5-6 mm with hilum or enhancement, vessels, cysts, tissue optics) through the real workflow,
against the generator's truth.

Tolerances follow the measured error (benchmarks/accuracy_photoacoustic.py, seeds 0-23): of 24
volumes with a node 19 end ok, 5 (faint, or beside a darker cyst) are errors that ask for a seed;
the ok ones have Dice 0.85-0.95 and sO2 within 0.033, volume 0.95-1.35 (those without a warning
within 15 %, 14 of 19 within 10 %); 12 of 12 volumes without a node are errors."""
import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import run_snakemake
from exotrack.demo_photoacoustic import simulate_family
from exotrack.io import write_ome_tiff

NODE_SEEDS = range(12)
NO_NODE_SEEDS = (100, 111)


def test_randomised_volumes_through_the_workflow(tmp_path):
    truth, rows = {}, []
    for seed, node in [(s, True) for s in NODE_SEEDS] + [(s, False) for s in NO_NODE_SEEDS]:
        volume = simulate_family(seed, node=node)
        sample = f"v{seed}"
        write_ome_tiff(tmp_path / f"{sample}.ome.tif", volume.image, axes="CZYX", channel_names=volume.channel_names,
                       pixel_size_um=volume.voxel_size_um)
        truth[sample] = volume
        rows.append({"sample": sample, "modality": "photoacoustic", "path": f"{sample}.ome.tif",
                     "group": "node" if node else "none", "subject": sample})
    pd.DataFrame(rows).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv", keep_default_na=False).set_index("sample")

    measured = []
    for sample, volume in truth.items():
        status, warnings = table.loc[sample, "status"], table.loc[sample, "warnings"]
        if not volume.node.any():
            assert status.startswith("error: no lymph node found"), (sample, status)
            continue
        if status != "ok":
            assert status.startswith("error: no lymph node found") and "give a seed" in status, (sample, status)
            continue
        mask = tifffile.imread(tmp_path / "results" / "photoacoustic" / sample / "node.tif").astype(bool)
        mask = mask.reshape(volume.node.shape)
        dice = 2 * (mask & volume.node).sum() / (mask.sum() + volume.node.sum())
        ratio = float(table.loc[sample, "ln_volume_mm3"]) / volume.node_volume_mm3
        so2_error = float(table.loc[sample, "ln_so2_mean"]) - volume.node_so2
        measured.append((sample, dice, ratio, so2_error, bool(warnings)))
        # A wrong node is never a quiet ok.
        assert dice >= 0.5 or warnings, (sample, dice)
        if not warnings:
            assert dice >= 0.85, (sample, dice)
            assert ratio == pytest.approx(1, abs=0.2), (sample, ratio)
            assert abs(so2_error) <= 0.05, (sample, so2_error)
    quiet = [m for m in measured if not m[4]]
    assert len(measured) >= 10 and len(quiet) >= 6, measured
    assert np.median([m[1] for m in measured]) >= 0.9
    assert np.median([abs(m[2] - 1) for m in quiet]) <= 0.06
