"""Figures for the paper: one point per subject over a box per group, or growth curves where a
metric was followed over time; sample sizes on the axis and the corrected p-value on top."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
# Figures drawn to files only, without pyplot: no display needed on a cluster node, no global
# figure registry, and a sixth of a second less start-up.
from matplotlib.figure import Figure

LABELS = {
    "n_cells": "cells per field",
    "pct_exosome_positive_cells": "exosome-positive cells (%)",
    "puncta_per_cell_mean": "CD63-RFP puncta per cell",
    "exosome_intensity_per_cell_mean": "CD63-RFP per cell (a.u.)",
    "n_puncta": "puncta per field",
    "pct_puncta_in_cells": "puncta inside cells (%)",
    "positive_cells_per_mm2": "positive cells per mm²",
    "positive_pct": "positive cells (%)",
    "dab_area_fraction": "positive area fraction",
    "h_score": "H-score",
    "m2_m1_ratio": "M2/M1 ratio (positive cells per mm²)",
    "tumor_total_flux_p_s": "tumour total flux (p/s)",
    "tumor_avg_radiance": "tumour radiance (p/s/cm²/sr)",
    "lymph_node_total_flux_p_s": "lymph-node total flux (p/s)",
    "lymph_node_avg_radiance": "lymph-node radiance (p/s/cm²/sr)",
    "pct_positive": "positive cells (%)",
    "spearman_puncta": "Spearman ρ with puncta per cell",
    "pct_positive_uptake_gt20": "positive cells with > 20 puncta (%)",
    "m2_m1_positive_ratio": "M2/M1 ratio (% positive cells)",
    "closure_rate_um_h": "closure rate (µm/h)",
    "pct_closure_final": "closure at the last time (%)",
    "initial_width_um": "wound width at time 0 (µm)",
    "wound_area_t0_mm2": "wound area at time 0 (mm²)",
    "pct_closure": "wound closure (%)",
    "mean_width_um": "wound width (µm)",
    "wound_area_mm2": "wound area (mm²)",
    "migrated_cells_per_field": "migrated cells per field",
    "migrated_cells_per_mm2": "migrated cells per mm²",
}
# Photon counts span decades: these are drawn on a log axis.
_LOG_SUFFIXES = ("_flux_p_s", "_radiance")


def label(metric: str) -> str:
    """Axis title of a metric; a histology marker's metric is titled with the marker."""
    if metric in LABELS:
        return LABELS[metric]
    marker, _, base = metric.partition("_")
    return f"{marker} {LABELS[base]}" if base in LABELS else metric


def _p_text(p):
    if not np.isfinite(p):
        return "n.s. (no test)"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def group_figure(values: pd.DataFrame, groups: pd.DataFrame, metrics: list[str], *, control: str,
                 title: str = ""):
    """A figure with one panel per metric from :func:`exotrack.stats.subject_values` output and
    the matching :func:`exotrack.stats.group_table`."""
    metrics = [m for m in metrics if m in set(values["metric"])]
    columns = min(len(metrics), 3) or 1
    rows = int(np.ceil(len(metrics) / columns)) or 1
    fig = Figure(figsize=(3.6 * columns, 3.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    order = sorted(set(values["group"]), key=lambda g: (g != control, g))
    palette = matplotlib.colormaps["tab10"]
    colours = {g: palette(i % 10) for i, g in enumerate(order)}
    for ax, metric in zip(axes.ravel(), metrics):
        data = values[values["metric"] == metric]
        if data["timepoint"].nunique() > 1:
            _curves(ax, data, order, colours)
            if metric.endswith(_LOG_SUFFIXES) and (data["value"] > 0).all():
                ax.set_yscale("log")
        else:
            _boxes(ax, data, order, colours, groups[(groups["metric"] == metric)])
        ax.set_title(label(metric), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _boxes(ax, data, order, colours, tests):
    present = [g for g in order if g in set(data["group"])]
    samples = [data.loc[data["group"] == g, "value"].to_numpy() for g in present]
    ax.boxplot(samples, positions=range(len(present)), widths=0.5, showfliers=False,
               medianprops={"color": "black"})
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every run
    for i, (g, v) in enumerate(zip(present, samples)):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=18, color=colours[g], zorder=3)
    ax.set_xticks(range(len(present)), [f"{g}\n(n={len(v)})" for g, v in zip(present, samples)], fontsize=8)
    top = max((np.max(v) for v in samples if len(v)), default=1.0)
    for i, g in enumerate(present):
        row = tests[tests["group"] == g]
        if len(row) and row["note"].iloc[0] != "control group":
            ax.text(i, top * 1.05, _p_text(row["p_holm"].iloc[0]), ha="center", fontsize=7)
    ax.set_ylim(top=top * 1.15 if top > 0 else None)


def _curves(ax, data, order, colours):
    for g in order:
        block = data[data["group"] == g]
        if block.empty:
            continue
        for _, curve in block.groupby("subject"):
            curve = curve.sort_values("timepoint")
            ax.plot(curve["timepoint"], curve["value"], color=colours[g], alpha=0.3, lw=0.8)
        summary = block.groupby("timepoint")["value"].agg(["mean", "std", "count"])
        ax.errorbar(summary.index, summary["mean"], yerr=summary["std"], color=colours[g], lw=2,
                    capsize=3, label=f"{g} (n={block['subject'].nunique()})")
    ax.set_xlabel("timepoint")
    ax.legend(fontsize=7, frameon=False)


def msd_figure(curves: pd.DataFrame):
    """MSD against lag on log axes: each sample's ensemble curve (thin) and each group's (thick),
    the group's pooling its samples' displacement pairs.

    ``curves`` holds ``msd.csv`` rows (see :func:`exotrack.export.msd_table`) with ``sample`` and
    ``group`` columns; only the ``ensemble`` rows are drawn.
    """
    fig = Figure(figsize=(4.6, 3.6))
    ax = fig.subplots()
    ensemble = curves[(curves["kind"] == "ensemble") & (curves["msd_um2"] > 0)]
    order = sorted(set(curves["group"].fillna("")))
    palette = matplotlib.colormaps["tab10"]
    for i, group in enumerate(order):
        block = ensemble[ensemble["group"].fillna("") == group]
        colour = palette(i % 10)
        for _, sample in block.groupby("sample"):
            ax.plot(sample["lag_s"], sample["msd_um2"], color=colour, alpha=0.3, lw=0.8)
        if block.empty:
            continue
        pooled = block.assign(sq=block["msd_um2"] * block["n_pairs"]).groupby("lag_s")[["sq", "n_pairs"]].sum()
        n = curves.loc[curves["group"].fillna("") == group, "sample"].nunique()
        ax.plot(pooled.index, pooled["sq"] / pooled["n_pairs"], color=colour, lw=2,
                label=f"{group or 'no group'} (n={n} samples)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lag (s)")
    ax.set_ylabel("MSD (µm²)")
    ax.set_title("puncta tracks: ensemble MSD per group", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def save(fig, png, svg) -> None:
    from .io import atomic_path

    for path, fmt in ((png, "png"), (svg, "svg")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)


def uptake_figure(table: pd.DataFrame, *, control: str, title: str = ""):
    """Marker-positive % per uptake bin (puncta per cell), one panel per marker and one line per
    group (mean ± sd over samples), from ``results/tables/markers.csv``."""
    bins = [c for c in table.columns if c.startswith("pct_positive_uptake_")]
    names = list(dict.fromkeys(table["marker"]))
    fig = Figure(figsize=(3.8 * max(len(names), 1), 3.4))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    order = sorted(set(table["group"].astype(str)), key=lambda g: (g != control, g))
    palette = matplotlib.colormaps["tab10"]
    x = np.arange(len(bins))
    for ax, name in zip(axes, names):
        for i, group in enumerate(order):
            block = table[(table["marker"] == name) & (table["group"].astype(str) == group)][bins]
            ax.errorbar(x, block.mean(), yerr=block.std(), color=palette(i % 10), lw=2, capsize=3, marker="o",
                        label=f"{group} (n={len(block)})")
        ax.set_xticks(x, [b.removeprefix("pct_positive_uptake_").replace("_", "-").replace("gt20", ">20")
                          for b in bins])
        ax.set_xlabel("puncta per cell")
        ax.set_ylabel(f"{name}-positive cells (%)")
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
