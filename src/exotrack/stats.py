"""Group statistics: the comparison a paper reports, computed honestly.

The unit of analysis is the subject (animal or well), not the field: several fields of one well
are averaged first, so that they do not count as independent replicates. Each group is compared
with the control group by a two-sided Mann-Whitney U test (default) or Welch's t-test, with an
effect size; p-values are corrected by Holm's method over the groups compared with the control
for the same metric and timepoint (one family per endpoint, as a paper reports them). Groups with fewer than ``min_n`` subjects get descriptive statistics and a note, no p-value.
Where a metric was measured at several timepoints (growth curves), groups are compared at each
timepoint and by the area under each subject's curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

GROUP_COLUMNS = ["metric", "timepoint", "group", "n", "mean", "sd", "median", "control", "n_control",
                 "test", "statistic", "p_value", "p_holm", "effect_size", "effect_measure", "note"]


def _subject_of(samples: pd.DataFrame) -> pd.Series:
    """Each sample's subject; a sample without one is its own subject."""
    subject = samples["subject"].astype("string").fillna("")
    return subject.where(subject != "", samples["sample"].astype("string"))


def subject_values(samples: pd.DataFrame, metrics: list[str], *, marker_ratio: tuple[str, str] | None = None
                   ) -> pd.DataFrame:
    """One value per subject, group, timepoint and metric: the mean over the subject's samples.

    Only samples with ``status == "ok"`` count; a sample without a subject is its own subject.
    Histology metrics are kept apart per marker (``CD206_positive_pct``), since one animal's
    sections stained for different markers are different measurements. With ``marker_ratio``
    ``(numerator, denominator)``, e.g. ``("CD206", "NOS2")``, subjects with both markers also get
    ``m2_m1_ratio``: the ratio of their positive cells per mm².
    """
    ok = samples[samples["status"] == "ok"].copy()
    ok["subject"] = _subject_of(ok)
    ok["timepoint"] = pd.to_numeric(ok["timepoint"], errors="coerce")
    for column in ("modality", "marker"):
        ok[column] = ok[column].astype("string").fillna("") if column in ok else ""
    present = [m for m in metrics if m in ok.columns]
    long = ok.melt(id_vars=["subject", "group", "timepoint", "modality", "marker"], value_vars=present,
                   var_name="metric")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    long["group"] = long["group"].fillna("")
    per_marker = (long["modality"] == "histology") & (long["marker"] != "")
    long.loc[per_marker, "metric"] = long.loc[per_marker, "marker"] + "_" + long.loc[per_marker, "metric"]
    values = (long.groupby(["metric", "subject", "group", "timepoint"], dropna=False)["value"]
              .mean().reset_index())
    if marker_ratio:
        values = pd.concat([values, _ratio(values, *marker_ratio)], ignore_index=True)
    return values


def _ratio(values: pd.DataFrame, numerator: str, denominator: str) -> pd.DataFrame:
    """``m2_m1_ratio`` rows: numerator over denominator positive cells per mm², per subject and
    timepoint where both were measured (NaN where the denominator is zero)."""
    keys = ["subject", "group", "timepoint"]
    top = values[values["metric"] == f"{numerator}_positive_cells_per_mm2"].set_index(keys)["value"]
    bottom = values[values["metric"] == f"{denominator}_positive_cells_per_mm2"].set_index(keys)["value"]
    ratio = (top / bottom.where(bottom > 0)).dropna()
    return ratio.rename("value").reset_index().assign(metric="m2_m1_ratio")


def metric_order(names, metrics: list[str]) -> list[str]:
    """``names`` (metrics as :func:`subject_values` spells them) in the order of ``metrics``, a
    marker's variants together and ratios last."""
    def key(name):
        for index, metric in enumerate(metrics):
            if name == metric or name.endswith("_" + metric):
                return (index, name)
        return (len(metrics), name)

    return sorted(set(names), key=key)


def subject_table(samples: pd.DataFrame, metrics: list[str], *, marker_ratio=None) -> pd.DataFrame:
    """``subjects.csv``: per subject, each metric at the subject's last timepoint for that metric
    (with that timepoint), so that a well or an animal reads as one row across modalities."""
    values = subject_values(samples, metrics, marker_ratio=marker_ratio)
    if values.empty:
        return pd.DataFrame(columns=["subject", "group"])
    values = values.sort_values("timepoint", na_position="first")
    last = values.groupby(["subject", "metric"], dropna=False).tail(1)
    indexed = last.set_index(["subject", "group", "metric"])
    wide = indexed["value"].unstack("metric")
    when = indexed["timepoint"].unstack("metric")
    ordered = metric_order(wide.columns, metrics)
    table = wide[ordered].join(when[ordered].add_suffix("_timepoint"))
    n_samples = _subject_of(samples).value_counts().rename("n_samples")
    table = table.join(n_samples, on="subject")
    return table.reset_index()


def compare(values: np.ndarray, control: np.ndarray, *, test: str):
    """Statistic, two-sided p-value and effect size of ``values`` against ``control``.

    Mann-Whitney: U of ``values`` and the rank-biserial correlation (positive when ``values``
    tend to be larger). Welch: t and Hedges' g (pooled-sd standardised difference, small-sample
    corrected).
    """
    if test == "mannwhitney":
        result = stats.mannwhitneyu(values, control, alternative="two-sided")
        effect = 2 * result.statistic / (len(values) * len(control)) - 1
        return float(result.statistic), float(result.pvalue), float(effect), "rank_biserial"
    if test == "welch":
        result = stats.ttest_ind(values, control, equal_var=False)
        n1, n2 = len(values), len(control)
        pooled = np.sqrt(((n1 - 1) * np.var(values, ddof=1) + (n2 - 1) * np.var(control, ddof=1)) / (n1 + n2 - 2))
        g = (np.mean(values) - np.mean(control)) / pooled if pooled > 0 else np.nan
        g *= 1 - 3 / (4 * (n1 + n2) - 9)
        return float(result.statistic), float(result.pvalue), float(g), "hedges_g"
    raise ValueError(f"unknown test {test!r}: use 'mannwhitney' or 'welch'")


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment; NaN entries are left out and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    index = np.flatnonzero(np.isfinite(p))
    if index.size == 0:
        return out
    order = index[np.argsort(p[index])]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _auc(values: pd.DataFrame) -> pd.DataFrame:
    """Area under each subject's curve over the timepoints all subjects share (trapezoids)."""
    shared = set.intersection(*[set(g["timepoint"]) for _, g in values.groupby("subject")])
    if len(shared) < 2:
        return values.iloc[0:0]
    rows = []
    for (subject, group), curve in values[values["timepoint"].isin(shared)].groupby(["subject", "group"]):
        curve = curve.sort_values("timepoint")
        rows.append({"subject": subject, "group": group, "value": np.trapezoid(curve["value"], curve["timepoint"])})
    return pd.DataFrame(rows)


def group_table(samples: pd.DataFrame, metrics: list[str], *, control: str, test: str = "mannwhitney",
                min_n: int = 3, marker_ratio=None) -> pd.DataFrame:
    """``groups.csv``: per metric (and timepoint, when there are several) and group."""
    values = subject_values(samples, metrics, marker_ratio=marker_ratio)
    rows = []
    for metric in metric_order(values["metric"], metrics):
        by_metric = values[values["metric"] == metric]
        times = sorted(by_metric["timepoint"].dropna().unique())
        blocks = [("all", by_metric)] if len(times) <= 1 else (
            [(t, by_metric[by_metric["timepoint"] == t]) for t in times] + [("auc", _auc(by_metric))])
        for timepoint, block in blocks:
            rows += _compare_block(block, metric, timepoint, control=control, test=test, min_n=min_n)
    table = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    families = table.groupby(["metric", table["timepoint"].astype(str)], sort=False).indices.values()
    for index in families:
        table.loc[table.index[index], "p_holm"] = holm(table["p_value"].to_numpy(float)[index])
    return table


def _compare_block(block, metric, timepoint, *, control, test, min_n):
    rows = []
    groups = {g: v["value"].to_numpy(float) for g, v in block.groupby("group", sort=True)}
    reference = groups.get(control)
    for group, values in groups.items():
        row = {"metric": metric, "timepoint": timepoint, "group": group, "n": len(values),
               "mean": np.mean(values), "sd": np.std(values, ddof=1) if len(values) > 1 else np.nan,
               "median": np.median(values), "control": control, "p_value": np.nan, "note": ""}
        if group == control:
            row["note"] = "control group"
        elif reference is None:
            row["note"] = f"no control group {control!r} to compare with"
        else:
            row["n_control"] = len(reference)
            if min(len(values), len(reference)) < min_n:
                row["note"] = (f"too few subjects for a test (n = {len(values)} vs {len(reference)} in "
                               f"{control}; at least {min_n} each are needed)")
            else:
                statistic, p, effect, measure = compare(values, reference, test=test)
                row.update(test=test, statistic=statistic, p_value=p, effect_size=effect, effect_measure=measure)
        rows.append(row)
    return rows
