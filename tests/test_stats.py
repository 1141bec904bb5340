"""Group statistics against scipy on known data."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from exotrack.stats import group_table, holm, subject_table, subject_values


def _samples(groups: dict[str, list[float]], metric="puncta_per_cell_mean", timepoint=24):
    rows = []
    for group, values in groups.items():
        for i, value in enumerate(values):
            rows.append({"sample": f"{group}_{i}", "subject": f"{group}_{i}", "group": group,
                         "timepoint": timepoint, "status": "ok", metric: value})
    return pd.DataFrame(rows)


def test_mann_whitney_and_descriptives_match_scipy():
    rng = np.random.default_rng(0)
    data = {"PBS": rng.normal(1, 0.5, 6).tolist(), "exosome": rng.normal(3, 1, 7).tolist(),
            "exosome_high": rng.normal(5, 1, 5).tolist()}
    table = group_table(_samples(data), ["puncta_per_cell_mean"], control="PBS").set_index("group")
    for group in ("exosome", "exosome_high"):
        expected = stats.mannwhitneyu(data[group], data["PBS"], alternative="two-sided")
        assert table.loc[group, "statistic"] == pytest.approx(expected.statistic)
        assert table.loc[group, "p_value"] == pytest.approx(expected.pvalue)
        assert table.loc[group, "effect_size"] == pytest.approx(2 * expected.statistic / (len(data[group]) * 6) - 1)
        assert table.loc[group, "mean"] == pytest.approx(np.mean(data[group]))
        assert table.loc[group, "sd"] == pytest.approx(np.std(data[group], ddof=1))
        assert table.loc[group, "median"] == pytest.approx(np.median(data[group]))
    raw = table.loc[["exosome", "exosome_high"], "p_value"].to_numpy()
    assert table.loc[["exosome", "exosome_high"], "p_holm"].to_numpy() == pytest.approx(holm(raw))
    assert table.loc["PBS", "note"] == "control group" and np.isnan(table.loc["PBS", "p_value"])


def test_welch_matches_scipy():
    data = {"PBS": [1.0, 1.2, 0.8, 1.1], "exosome": [2.0, 2.6, 1.9, 3.1, 2.2]}
    row = group_table(_samples(data), ["puncta_per_cell_mean"], control="PBS", test="welch").set_index("group").loc["exosome"]
    expected = stats.ttest_ind(data["exosome"], data["PBS"], equal_var=False)
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["effect_measure"] == "hedges_g" and row["effect_size"] > 2


def test_holm_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, 0.09, 0.09 (monotone), 0.5
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, np.nan, 0.5])


def test_too_few_subjects_give_no_p_value_and_a_note():
    table = group_table(_samples({"PBS": [1, 2, 3], "exosome": [5, 6]}), ["puncta_per_cell_mean"],
                        control="PBS").set_index("group")
    assert np.isnan(table.loc["exosome", "p_value"])
    assert "too few subjects for a test (n = 2 vs 3" in table.loc["exosome", "note"]


def test_fields_of_one_well_are_averaged_not_counted_as_replicates():
    samples = _samples({"PBS": [1, 2, 3], "exosome": [4, 5, 6]})
    samples.loc[samples["group"] == "exosome", "subject"] = "well_1"
    values = subject_values(samples, ["puncta_per_cell_mean"])
    assert values[values["group"] == "exosome"]["value"].tolist() == [5.0]
    table = group_table(samples, ["puncta_per_cell_mean"], control="PBS").set_index("group")
    assert table.loc["exosome", "n"] == 1 and np.isnan(table.loc["exosome", "p_value"])


def test_failed_samples_are_left_out():
    samples = _samples({"PBS": [1, 2, 3, 100], "exosome": [4, 5, 6]})
    samples.loc[3, "status"] = "error: image is empty"
    table = group_table(samples, ["puncta_per_cell_mean"], control="PBS").set_index("group")
    assert table.loc["PBS", "n"] == 3 and table.loc["PBS", "mean"] == 2


def test_time_courses_are_compared_per_timepoint_and_by_area_under_the_curve():
    frames = []
    for day, scale in ((0, 1), (7, 2), (14, 4)):
        frames.append(_samples({"PBS": [scale * v for v in (1, 1.1, 0.9)],
                                "exosome": [scale * v * (1 + day / 7) for v in (1, 1.2, 1.1)]},
                               metric="n_cells", timepoint=day))
    samples = pd.concat(frames, ignore_index=True)
    table = group_table(samples, ["n_cells"], control="PBS")
    assert set(table["timepoint"].astype(str)) == {"0", "7", "14", "auc"}
    auc = table[(table["timepoint"] == "auc") & (table["group"] == "PBS")]["mean"].iloc[0]
    assert auc == pytest.approx(np.trapezoid([1, 2, 4], [0, 7, 14]))
    subjects = subject_table(samples, ["n_cells"]).set_index("subject")
    assert subjects.loc["exosome_0", "n_cells_timepoint"] == 14
    assert subjects.loc["exosome_0", "n_cells"] == pytest.approx(4 * 3)
    assert subjects.loc["exosome_0", "n_samples"] == 3


def test_warnings_column_joins_sample_and_mouse_warnings():
    from exotrack.aggregate import sample_table

    sheet = pd.DataFrame([{"sample": "f1", "modality": "fluorescence", "group": "PBS"},
                          {"sample": "b1", "modality": "bli", "group": "PBS", "subject": "m1;m2"},
                          {"sample": "f2", "modality": "fluorescence", "group": "PBS"}])
    metrics = [{"sample": "f1", "status": "ok", "warnings": ["spot width measured 0.6 µm", "few spots"]},
               {"sample": "b1", "status": "ok", "warnings": ["unknown key 'X'"],
                "animals": [{"subject": "m1", "warnings": ["m1 below detection"]}, {"subject": "m2"}]},
               {"sample": "f2", "status": "ok"}]
    table = sample_table(sheet, metrics)
    assert table["warnings"].tolist()[:3] == ["spot width measured 0.6 µm; few spots",
                                              "unknown key 'X'; m1 below detection", "unknown key 'X'"]
    assert pd.isna(table["warnings"].iloc[3]) or table["warnings"].iloc[3] == ""
    assert list(table.columns[:8]) == ["sample", "modality", "group", "subject", "timepoint", "marker",
                                        "status", "warnings"]
