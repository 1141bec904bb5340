"""Study-level tables: one row per sample across modalities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .sheet import load_sample_sheet
from .viewer import read_decisions

ID_COLUMNS = ["sample", "modality", "group", "subject", "timepoint", "marker", "status", "warnings"]
# The metrics each modality's analysis reports in its metrics.json and the study table gathers.
# Defined here, not in the modality modules, so that the study-level steps need not import the
# image analyses (a second of start-up per job).
TIMELAPSE_HEADLINE = ["n_tracks", "median_diffusion_um2_s", "pct_internalised_tracks", "cell_mean_speed_um_min"]
HEADLINE = {
    "fluorescence": ["n_cells", "pct_exosome_positive_cells", "puncta_per_cell_mean",
                     "exosome_intensity_per_cell_mean", "n_puncta", "pct_puncta_in_cells", "spot_fwhm_um",
                     "spot_fwhm_n_spots", "nucleus_diameter_um"] + TIMELAPSE_HEADLINE,
    "bli": ["tumor_total_flux_p_s", "tumor_avg_radiance", "lymph_node_total_flux_p_s", "lymph_node_avg_radiance"],
    "photoacoustic": ["ln_volume_mm3", "ln_pa_mean", "ln_so2_mean", "ln_hbt_mean"],
    "histology": ["positive_cells_per_mm2", "positive_pct", "dab_area_fraction", "h_score"],
    "wound": ["closure_rate_um_h", "pct_closure_final", "initial_width_um", "wound_area_t0_mm2"],
    "transwell": ["migrated_cells_per_field", "migrated_cells_per_mm2"],
}


def sample_table(sheet: pd.DataFrame, metrics: list[dict], decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """``samples.csv``: the sheet's identifying columns, each sample's ``status`` and its
    headline metrics (empty where a metric does not apply to the sample's modality).

    An acquisition of several mice (BLI) gives one row per mouse: the same ``sample``, each
    mouse's ``subject`` (and ``group``, where the sheet lists one per mouse). Samples of a
    modality this version cannot analyse are listed with a status that says so. Samples that
    failed visual QC (``decisions``, from the napari sample browser) keep their values with
    ``status`` ``excluded_qc`` and the reviewer's comment, which keeps them out of statistics.
    """
    failed = {}
    if decisions is not None:
        failed = {r.sample: r.comment for r in decisions.itertuples() if r.decision == "fail"}
    by_sample = {m["sample"]: m for m in metrics}
    rows = []
    for _, row in sheet.iterrows():
        record = {c: row.get(c, "") for c in ID_COLUMNS if c not in ("status", "warnings")}
        found = by_sample.get(row["sample"])
        if found is None:
            record["status"] = (f"not analysed: modality {row['modality']!r} is not supported by this version"
                                if row["modality"] not in HEADLINE else "error: analysis did not finish (killed: out of memory or time limit?)")
            rows.append(record)
            continue
        animals = found.get("animals") or [found]
        groups = _per_animal(record["group"], len(animals))
        for animal, group in zip(animals, groups):
            entry = {**record, "group": group, "status": animal.get("status", found["status"]),
                     "warnings": join_warnings(found, animal)}
            if row["sample"] in failed:
                entry["status"] = f"excluded_qc: {failed[row['sample']]}".rstrip(": ")
            if "animals" in found:
                entry["subject"] = animal["subject"]
            entry.update({k: animal.get(k) for k in HEADLINE.get(row["modality"], [])})
            entry.update(found.get("marker_metrics") or {})  # exotrack.markers: named per marker
            rows.append(entry)
    columns = ID_COLUMNS + all_metrics() + list(dict.fromkeys(
        k for m in metrics for k in m.get("marker_metrics") or {}))
    table = pd.DataFrame(rows, columns=columns)
    # Empty sheet cells are missing values, in the CSV and the Parquet copy alike.
    table[ID_COLUMNS] = table[ID_COLUMNS].replace("", np.nan)
    table["timepoint"] = pd.to_numeric(table["timepoint"], errors="coerce")
    # metrics.json writes a missing value as null (strict JSON): a number column all the same.
    table[all_metrics()] = table[all_metrics()].apply(pd.to_numeric, errors="coerce")
    return table


def join_warnings(*records: dict) -> str:
    """The ``warnings`` cell: every distinct warning of the sample (and of the mouse, for a
    multi-mouse acquisition), in order, separated by ``; ``."""
    seen = dict.fromkeys(w for r in records if r is not None for w in (r.get("warnings") or []))
    return "; ".join(seen)


def _per_animal(value, n: int) -> list:
    """A sheet cell listing one entry per mouse (``PBS;PBS;exosome``), or one for all."""
    parts = [p.strip() for p in str(value).split(";")] if isinstance(value, str) and ";" in value else None
    return parts if parts and len(parts) == n else [value] * n


def bli_rois(sheet: pd.DataFrame, paths: dict) -> pd.DataFrame:
    """Every BLI acquisition's ROI rows with the mouse's group and the acquisition's timepoint
    and sample; ``paths`` maps sample to its ``rois.csv``."""
    tables = []
    indexed = sheet.set_index("sample")
    for sample, path in paths.items():
        rois = pd.read_csv(path)
        if rois.empty:
            continue
        row = indexed.loc[sample]
        subjects = [s.strip() for s in str(row.get("subject") or "").split(";") if s.strip()]
        groups = dict(zip(subjects, _per_animal(row.get("group", ""), len(subjects))))
        rois["group"] = rois["subject"].astype(str).map(groups).fillna(row.get("group", ""))
        rois["timepoint"] = row.get("timepoint")
        rois["sample"] = sample
        tables.append(rois)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def all_metrics() -> list[str]:
    """Every headline metric of every modality, in table order."""
    return list(dict.fromkeys(c for cols in HEADLINE.values() for c in cols))


def read_metrics(paths) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def read_sample_table(sheet, schema, metrics, decisions=None) -> pd.DataFrame:
    """:func:`sample_table` from files: the sample sheet (validated against ``schema``), each
    sample's ``metrics.json`` and, if given, the QC decisions CSV."""
    return sample_table(load_sample_sheet(sheet, schema, check_paths=False), read_metrics(metrics),
                        read_decisions(decisions) if decisions else None)


def write_study(sheet, schema, metrics, outputs, *, decisions=None, modalities, control: str, statistics: dict,
                marker_ratio) -> pd.DataFrame:
    """Write the study level: ``samples.csv`` (and ``.parquet``), ``subjects.csv``, ``groups.csv``
    and one plot per modality (PNG and SVG), to the paths in ``outputs`` (keys ``samples``,
    ``parquet``, ``subjects``, ``groups``, ``png_<modality>``, ``svg_<modality>``).

    ``metrics`` are the ``metrics.json`` files to gather; a sample of the sheet without one is
    listed as not finished. Returns the sample table.
    """
    from . import io
    from .plots import group_figure, save
    from .stats import group_table, metric_order, subject_table, subject_values

    samples = read_sample_table(sheet, schema, metrics, decisions)
    io.write_table(samples, outputs["samples"])
    io.write_parquet(samples, outputs["parquet"])
    io.write_table(subject_table(samples, all_metrics(), marker_ratio=marker_ratio), outputs["subjects"])
    groups = group_table(samples, all_metrics(), control=control, test=statistics["test"],
                         min_n=statistics["min_n"], marker_ratio=marker_ratio)
    io.write_table(groups, outputs["groups"])
    for modality in modalities:
        values = subject_values(samples[samples["modality"] == modality], HEADLINE[modality],
                                marker_ratio=marker_ratio)
        figure = group_figure(values, groups, metric_order(values["metric"], HEADLINE[modality]),
                              control=control, title=f"{modality}: one point per subject")
        save(figure, outputs[f"png_{modality}"], outputs[f"svg_{modality}"])
    return samples
