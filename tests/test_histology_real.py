"""Histology on real IHC with ground truth: Ki67 tiles (DeepLIIF) through the workflow, defaults only.

Truth: each tile's cell mask (red Ki67-positive, blue negative, green boundaries) gives the nucleus
centres; ``counts.json`` the dataset's positive %. Measured (defaults, marker ``Ki67``):

| tile     | F1 (4 µm) | positive % | truth % |
|----------|-----------|------------|---------|
| Lung1    | 0.873     | 16.9       | 18.3    |
| Bladder1 | 0.860     | 11.7       | 8.2     |

Four of Bladder1's 15 positive cells show no DAB in the IHC (the truth comes from a co-registered
immunofluorescence), which bounds how close positive % can get there.
"""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi

from conftest import run_snakemake, shared
from exotrack.evaluate import match_points

TILES = ["Lung1", "Bladder1"]
PIXEL_SIZE_UM = 0.25  # 40x, as the dataset states


def ki67_truth(mask_path) -> pd.DataFrame:
    """Nucleus centres (pixels) and positivity from a DeepLIIF mask: red positive, blue negative,
    green boundaries between touching cells."""
    mask = np.asarray(Image.open(mask_path).convert("RGB")).astype(int)
    rows = []
    for positive, selected in ((True, (mask[..., 0] > 128) & (mask[..., 1] < 128)),
                               (False, (mask[..., 2] > 128) & (mask[..., 1] < 128))):
        labels, n = ndi.label(selected)
        sizes = np.bincount(labels.ravel())[1:]
        centres = ndi.center_of_mass(selected, labels, np.arange(1, n + 1))
        rows += [(y, x, positive) for (y, x), size in zip(centres, sizes) if size >= 20]  # specks of colour
    return pd.DataFrame(rows, columns=["y", "x", "positive"])


def test_mask_truth_agrees_with_the_datasets_counts():
    counts = json.loads(shared("ihc_ki67/counts.json").read_text())
    for tile in TILES:
        truth = ki67_truth(shared(f"ihc_ki67/{tile}_gt_seg.png"))
        assert abs(len(truth) - counts[tile]["num_total"]) <= 1
        assert abs(truth["positive"].sum() - counts[tile]["num_pos"]) <= 1


def test_ki67_tiles_with_defaults(tmp_path):
    folder = shared("ihc_ki67")
    counts = json.loads((folder / "counts.json").read_text())
    rows = [{"sample": tile.lower(), "modality": "histology", "path": str(folder / f"{tile}_ihc.png"),
             "group": "A", "marker": "Ki67", "pixel_size_um": str(PIXEL_SIZE_UM)} for tile in TILES]
    pd.DataFrame(rows).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=samples.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    for tile in TILES:
        sample = tile.lower()
        assert table.loc[sample, "status"] == "ok", table.loc[sample, "status"]
        metrics = json.loads((tmp_path / "results" / "histology" / sample / "metrics.json").read_text())
        assert metrics["compartment"] == "nucleus"  # Ki67 is nuclear: the default follows from the name
        # The nucleus size is measured: the masks' nuclei are 6.7-7.1 µm across (equivalent diameter).
        assert metrics["nucleus_diameter_um"] == pytest.approx(6.9, abs=0.7)
        cells = pd.read_csv(tmp_path / "results" / "histology" / sample / "cells.csv")
        truth = ki67_truth(folder / f"{tile}_gt_seg.png")
        _, precision, recall, f1 = match_points(cells[["y", "x"]].to_numpy(), truth[["y", "x"]].to_numpy(),
                                                radius=4.0 / PIXEL_SIZE_UM)
        assert f1 >= 0.85, (tile, precision, recall, f1)
        assert abs(table.loc[sample, "positive_pct"] - counts[tile]["percent_pos"]) <= 5.0, tile
