"""Polarization markers per cell against the truth of simulated macrophage wells."""

import numpy as np
import pandas as pd
import pytest

from exotrack import fluorescence, io, markers
from exotrack.demo_vitro import simulate_marker_well, true_spearman

MARKERS = ("CD206", "iNOS")
MAPPING = {"nuclei": "Hoechst", "exosomes": "CD63-RFP", "cells": "CellMask", "markers": "CD206,iNOS"}


def analyse(well):
    image = io.Image(data=well.image[None, :, None], channel_names=well.channel_names,
                     pixel_size_um=(1.0, well.pixel_size_um, well.pixel_size_um))
    roles = fluorescence.resolve_roles(image, {k: v for k, v in MAPPING.items() if k != "markers"})
    result = fluorescence.analyse_image(image, roles=roles, pixel_size_um=(1.0, 0.2, 0.2), options={})
    markers.add_markers(result, image, mapping=MAPPING, options={})
    table = result.cell_table
    # Each truth cell is matched to the segmented cell under its centre.
    truth = well.truth.assign(found=result.cells[0, 0][well.truth["y"].round().astype(int),
                                                       well.truth["x"].round().astype(int)])
    return result, table, truth


@pytest.fixture(scope="module")
def wells():
    out = []
    for seed in range(6):
        well = simulate_marker_well(treated=seed % 2 == 1, seed=100 + seed)
        out.append((well, *analyse(well)))
    return out


def test_segmented_cells_match_truth_one_to_one(wells):
    for well, result, table, truth in wells:
        assert not any("cells only" in w for w in result.metrics["warnings"])
        assert (truth["found"] > 0).mean() >= 0.97
        assert not truth.loc[truth["found"] > 0, "found"].duplicated().any()


def test_positivity_f1_and_percent_positive(wells):
    """F1 over all wells' cells; % positive within 3 points per group (192 cells). A single well
    is held to 7 (one cell of 64 is 1.6 points; over 12 other seeds the sample's own gate was off
    by up to 6.3 in control wells with few CD206-positive cells, pooled by at most 1.0)."""
    for marker in MARKERS:
        hits, groups = [], {}
        for well, result, table, truth in wells:
            matched = truth[truth["found"] > 0]
            called = table.set_index("cell_id").loc[matched["found"], f"{marker}_positive"].to_numpy(bool)
            hits.append(pd.DataFrame({"truth": matched[f"{marker}_positive"].to_numpy(bool), "called": called}))
            measured = result.metrics["marker_metrics"][f"{marker}_pct_positive"]
            true = 100 * truth[f"{marker}_positive"].mean()
            assert abs(measured - true) <= 7.0, (marker, measured, true)
            group = groups.setdefault(well.truth["puncta"].mean() > 2, [0, 0, 0])
            group[0] += table[f"{marker}_positive"].sum()
            group[1] += truth[f"{marker}_positive"].sum()
            group[2] += len(truth)
        for called, true, n in groups.values():
            assert abs(100 * (called - true) / n) <= 3.0, (marker, called, true, n)
        hits = pd.concat(hits)
        tp = (hits["truth"] & hits["called"]).sum()
        f1 = 2 * tp / (hits["truth"].sum() + hits["called"].sum())
        assert f1 >= 0.95, (marker, f1)


def test_uptake_marker_correlation_recovered(wells):
    treated = [w for w in wells if w[0].truth["puncta"].mean() > 2]
    assert treated
    for well, result, table, truth in treated:
        for marker in MARKERS:
            measured = result.metrics["marker_metrics"][f"{marker}_spearman_puncta"]
            assert abs(measured - true_spearman(well.truth, marker)) <= 0.1, (marker, measured)


def test_treated_wells_shift_towards_cd206_most_in_high_uptake_cells(wells):
    treated = [r.metrics["marker_metrics"] for w, r, *_ in wells if w.truth["puncta"].mean() > 2]
    control = [r.metrics["marker_metrics"] for w, r, *_ in wells if w.truth["puncta"].mean() <= 2]
    assert np.mean([m["m2_m1_positive_ratio"] for m in treated]) > np.mean(
        [m["m2_m1_positive_ratio"] for m in control])
    high = np.nanmean([m["CD206_pct_positive_uptake_gt20"] for m in treated])
    low = np.nanmean([m["CD206_pct_positive_uptake_1_5"] for m in treated])
    assert high > low + 20


def test_control_gate_from_control_wells(wells):
    cells = {f"s{i}": t for i, (_, _, t, _) in enumerate(wells)}
    metrics = {f"s{i}": r.metrics for i, (_, r, _, _) in enumerate(wells)}
    groups = {f"s{i}": "exosome" if w.truth["puncta"].mean() > 2 else "PBS" for i, (w, *_) in enumerate(wells)}
    table, gates = markers.study_gates(cells, metrics, groups, control="PBS")
    assert set(gates["marker"]) == set(MARKERS) and gates["threshold"].notna().all()
    for marker in MARKERS:
        errors = []
        for i, (well, *_rest) in enumerate(wells):
            row = table[(table["sample"] == f"s{i}") & (table["marker"] == marker)].iloc[0]
            assert row["gate"] == "control"
            errors.append(row["pct_positive"] - 100 * well.truth[f"{marker}_positive"].mean())
        assert max(map(abs, errors)) <= 5.0 and abs(np.mean(errors)) <= 3.0, (marker, errors)


def test_gate_of_one_population_is_its_upper_tail():
    rng = np.random.default_rng(0)
    negative = rng.lognormal(np.log(150), 0.35, 2000)
    threshold, rule = markers.gate(negative, cofactor=10.0)
    assert rule == markers.ONE_POPULATION
    assert 0.3 <= 100 * (negative > threshold).mean() <= 2.0
    positive = rng.lognormal(np.log(900), 0.35, 300)
    threshold, rule = markers.gate(np.concatenate([negative, positive]), cofactor=10.0)
    assert rule.startswith("two populations")
    assert (negative > threshold).mean() + (positive <= threshold).mean() <= 0.03


def test_missing_marker_channel_is_named():
    well = simulate_marker_well(treated=False, shape=(256, 256), seed=1)
    image = io.Image(data=well.image[None, :, None], channel_names=well.channel_names,
                     pixel_size_um=(1.0, 0.2, 0.2))
    mapping = {**MAPPING, "markers": "CD206,Arg1"}
    roles = fluorescence.resolve_roles(image, {k: v for k, v in mapping.items() if k != "markers"})
    result = fluorescence.analyse_image(image, roles=roles, pixel_size_um=(1.0, 0.2, 0.2), options={})
    with pytest.raises(io.InputError, match="Arg1"):
        markers.add_markers(result, image, mapping=mapping, options={})


def test_few_cells_warn_that_the_sample_gate_is_rough():
    well = simulate_marker_well(treated=True, shape=(256, 256), seed=2)
    result, table, truth = analyse(well)
    assert len(table) < 20
    assert any("cells only" in w for w in result.metrics["warnings"])


def test_markers_in_movies_and_stacks_follow_each_frame_and_compartment():
    well = simulate_marker_well(treated=True, shape=(512, 512), seed=1)
    truth = 100 * well.truth["CD206_positive"].mean()
    mapping = {"nuclei": "Hoechst", "exosomes": "CD63-RFP", "markers": "CD206,iNOS"}
    movie = io.Image(data=np.stack([well.image, well.image])[:, :, None], channel_names=well.channel_names,
                     pixel_size_um=(1.0, 0.2, 0.2), frame_interval_s=60.0)
    stack = io.Image(data=np.repeat(well.image[None, :, None], 3, axis=2), channel_names=well.channel_names,
                     pixel_size_um=(1.0, 0.2, 0.2))
    for image, interval in ((movie, 60.0), (stack, None)):
        roles = fluorescence.resolve_roles(image, {k: v for k, v in mapping.items() if k != "markers"})
        result = fluorescence.analyse_image(image, roles=roles, pixel_size_um=(1.0, 0.2, 0.2), options={},
                                            frame_interval_s=interval)
        markers.add_markers(result, image, mapping=mapping, options={"compartments": {"iNOS": "cytoplasm"}})
        table = result.cell_table
        assert table["CD206_mean"].notna().all() and len(table) == image.n_frames * table["cell_id"].max()
        assert abs(result.metrics["marker_metrics"]["CD206_pct_positive"] - truth) <= 7.0
        assert result.metrics["markers"]["iNOS"]["compartment"] == "cytoplasm"
