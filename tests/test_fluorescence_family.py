"""Fields from an independent model of the microscope (tests/microscope_fields.py), each with its
own PSF width and profile, pixel size, bit depth, camera noise, background and cell size, run
through the workflow with the shipped configuration: no field gets a config change."""
import numpy as np
import pandas as pd
import tifffile

from conftest import run_snakemake
from exotrack.evaluate import match_labels, match_points
from microscope_fields import microscope_field

SEEDS = range(12)


def _count_errors(cells, truth_cells, puncta, field):
    """Per true cell matched at IoU > 0.5: (|found - true| puncta, true puncta)."""
    errors = []
    for label in range(1, int(truth_cells.max()) + 1):
        inside = truth_cells == label
        ids, overlap = np.unique(cells[inside], return_counts=True)
        overlap = np.where(ids > 0, overlap, 0)
        best = ids[np.argmax(overlap)]
        union = inside.sum() + (cells == best).sum() - overlap.max()
        if best == 0 or overlap.max() / union <= 0.5:
            continue
        true = int((field.owner == label).sum())
        errors.append((abs(int((puncta["cell_id"] == best).sum()) - true), true))
    return np.array(errors).reshape(-1, 2)


def test_independent_microscope_fields_through_the_workflow(tmp_path):
    fields, rows = {}, []
    for seed in SEEDS:
        field = microscope_field(seed, loaded=seed % 3 != 0)
        name = f"field{seed}"
        fields[name] = field
        tifffile.imwrite(tmp_path / f"{name}.ome.tif", field.image, ome=True,
                         metadata={"axes": "CYX", "PhysicalSizeX": field.pixel_size_um,
                                   "PhysicalSizeY": field.pixel_size_um})
        rows.append({"sample": name, "modality": "fluorescence", "path": str(tmp_path / f"{name}.ome.tif"),
                     "channels": "nuclei=0;exosomes=1;cells=2"})
    pd.DataFrame(rows).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--config", "samples=s.tsv")
    table = pd.read_csv(tmp_path / "results" / "tables" / "samples.csv").set_index("sample")
    drawn = pd.DataFrame([f.settings for f in fields.values()])
    # The family spans what it claims to.
    assert set(drawn["bits"]) == {8, 12, 16} and set(drawn["profile"]) == {"gaussian", "airy"}
    assert drawn["emccd"].any() and (drawn["correlate"] > 0).any() and (~drawn["loaded"]).any()
    assert drawn["sigma_px"].min() < 1.0 and drawn["sigma_px"].max() > 2.5
    scores = []
    for name, field in fields.items():
        assert table.loc[name, "status"] == "ok", (name, table.loc[name, "status"])
        base = tmp_path / "results" / "fluorescence" / name
        puncta = pd.read_csv(base / "puncta.csv")
        cells = tifffile.imread(base / "labels.tif")
        f1 = match_points(puncta[["y", "x"]].to_numpy(), field.puncta, radius=3)[3]
        cell_f1 = match_labels(cells, field.cells)
        errors = _count_errors(cells, field.cells, puncta, field)
        assert len(errors) >= 0.9 * field.cells.max(), name  # the count check covers the cells
        scores.append((name, f1, cell_f1, errors[:, 0].sum(), errors[:, 1].sum(), errors[:, 0].max()))
    scores = pd.DataFrame(scores, columns=["name", "f1", "cell_f1", "error", "true", "worst"]).set_index("name")
    assert (scores["f1"] >= 0.95).all(), scores
    assert (scores["cell_f1"] >= 0.9).all(), scores
    loaded = drawn["loaded"].to_numpy()
    # Loaded cells: per-field total count error within 10%; PBS cells (0-2 puncta): within one.
    assert (scores["error"][loaded] <= 0.1 * scores["true"][loaded]).all(), scores
    assert (scores["worst"][~loaded] <= 1).all(), scores
    # The spot width is measured per field (sigma from the FWHM; resampling widens the spots).
    measured = table.loc[list(fields), "spot_fwhm_um"].to_numpy() / 2.3548 / drawn["pixel_um"].to_numpy()
    expected = np.hypot(drawn["sigma_px"], drawn["correlate"]).to_numpy()
    assert np.all(np.abs(measured / expected - 1) < 0.15), (measured, expected)
