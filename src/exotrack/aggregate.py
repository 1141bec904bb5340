"""Study-level tables: one row per sample across modalities."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .fluorescence import HEADLINE as FLUORESCENCE_HEADLINE
from .fluorescence import TIMELAPSE_HEADLINE
from .histology import HEADLINE as HISTOLOGY_HEADLINE

ID_COLUMNS = ["sample", "modality", "group", "subject", "timepoint", "marker", "status"]
HEADLINE = {"fluorescence": FLUORESCENCE_HEADLINE + TIMELAPSE_HEADLINE, "histology": HISTOLOGY_HEADLINE}


def sample_table(sheet: pd.DataFrame, metrics: list[dict]) -> pd.DataFrame:
    """``samples.csv``: the sheet's identifying columns, each sample's ``status`` and its
    headline metrics (empty where a metric does not apply to the sample's modality).

    Samples of a modality this version cannot analyse are listed with a status that says so.
    """
    by_sample = {m["sample"]: m for m in metrics}
    rows = []
    for _, row in sheet.iterrows():
        record = {c: row.get(c, "") for c in ID_COLUMNS if c != "status"}
        found = by_sample.get(row["sample"])
        if found is not None:
            record["status"] = found["status"]
            record.update({k: found.get(k) for k in HEADLINE.get(row["modality"], [])})
        elif row["modality"] not in HEADLINE:
            record["status"] = f"not analysed: modality {row['modality']!r} is not supported by this version"
        else:
            record["status"] = "error: no result was produced"
        rows.append(record)
    columns = ID_COLUMNS + all_metrics()
    table = pd.DataFrame(rows, columns=columns)
    table["timepoint"] = pd.to_numeric(table["timepoint"], errors="coerce")
    return table


def all_metrics() -> list[str]:
    """Every headline metric of every modality, in table order."""
    return list(dict.fromkeys(c for cols in HEADLINE.values() for c in cols))


def read_metrics(paths) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]
