"""Polarization markers per cell (immunofluorescence of cultured macrophages), tied to uptake.

Each marker channel named for a fluorescence sample (``markers=CD206,iNOS`` in the sheet's
``channels`` column, or ``fluorescence.markers.names`` in the config) is measured in every
segmented cell: the background-corrected mean and integrated intensity over the marker's
compartment (whole cell by default; ``nucleus`` or ``cytoplasm`` per marker).

Gates. Intensities are compared on an arcsinh scale, ``asinh(value / cofactor)`` with the
channel's pixel noise as cofactor (as flow cytometry does): logarithmic for stained cells,
linear around zero, where unstained cells scatter. A gate is set on reference cells:

1. two populations, when a two-normal mixture (EM from Otsu's split) separates them by Ashman's
   D >= 3, each holding at least 3 % of the cells: the gate is where the two fitted densities
   meet, with equal priors, so that it does not move with the share of positive cells;
2. else, when Otsu's classes themselves are that far apart: the upper tail of the lower class,
   its median plus ``NEGATIVE_TAIL_Z`` spreads, the spread from its lower flank (half-normal), so
   that positive cells do not widen it;
3. else one population, taken as all negative, gated at its own upper tail the same way, with a
   warning that the sample cannot gate itself.

- Per sample (in the fluorescence job): the reference is the sample's own cells.
- Per study (:func:`study_gates`, rule ``gate_markers``): the reference is the pooled cells of the
  control group's samples, the default gate of ``results/tables/markers.csv``: like a
  flow-cytometry gate set on control wells, but on the control's populations rather than a raw
  95th percentile, so that a control with some positive cells (untreated macrophages are never
  all M0) does not move the gate into the positive population, and a treated well that is nearly
  all positive (which cannot gate itself) is gated as its controls are.

Per sample: % positive per marker, the M2/M1 ratio of positive fractions (first M2 and first M1
marker named), the Spearman correlation between puncta per cell and each marker's mean, and the
% positive in uptake bins (0, 1-5, 6-20, > 20 puncta per cell).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import stats

from . import io
from .background import background_surface, pixel_noise

M2_MARKERS = ("CD206", "MRC1", "ARG1", "CD163")
M1_MARKERS = ("INOS", "NOS2", "CD86")
COMPARTMENTS = ("cell", "nucleus", "cytoplasm")
# One-sided 99 % of a normal negative population: 1 % of negative cells gated positive.
NEGATIVE_TAIL_Z = 2.326
# Two populations: Otsu's classes separated by Ashman's D of at least this (a single normal
# split at its Otsu threshold gives D = 2.7), each with at least this fraction of the cells.
MIN_ASHMAN_D = 3.0
MIN_CLASS_FRACTION = 0.03
# Uptake bins: puncta per cell from (inclusive) each edge to the next.
UPTAKE_BINS = ((0, 0), (1, 5), (6, 20), (21, np.inf))
ONE_POPULATION = "one population, taken as all negative: its upper tail"

DEFAULTS = {"names": [], "compartment": "cell", "compartments": {}}


def marker_names(mapping: dict, options: dict | None) -> list[str]:
    """The marker channels of a sample: the sheet's ``markers=`` role, else the config's list."""
    given = mapping.get("markers")
    if given:
        return [n.strip() for n in str(given).split(",") if n.strip()]
    return [str(n) for n in ((options or {}).get("names") or [])]


def marker_class(name: str) -> str:
    """``"M2"``, ``"M1"`` or ``""`` for a marker name (case-insensitive, ``-``/``_`` ignored)."""
    key = name.upper().replace("-", "").replace("_", "")
    return "M2" if key in M2_MARKERS else "M1" if key in M1_MARKERS else ""


def bin_label(low, high) -> str:
    return "gt20" if not np.isfinite(high) else f"{low}" if low == high else f"{low}_{high}"


def measure_markers(cells: np.ndarray, nuclei: np.ndarray, images: dict[str, np.ndarray], *,
                    compartments: dict[str, str]) -> pd.DataFrame:
    """Background-corrected mean and integrated intensity of each marker in each cell.

    Parameters
    ----------
    cells, nuclei : ndarray of int
        Cell and nucleus labels of one 2-D or 3-D frame (a nucleus carries its cell's label).
    images : dict
        Marker name -> that marker's image, the same shape as ``cells``.
    compartments : dict
        Marker name -> ``cell``, ``nucleus`` or ``cytoplasm`` (cell without its nucleus).

    Returns
    -------
    DataFrame with ``cell_id`` and, per marker, ``<marker>_mean`` and ``<marker>_integrated``
    (NaN where the compartment is empty).
    """
    n = int(cells.max())
    table = pd.DataFrame({"cell_id": np.arange(1, n + 1)})
    # Background from outside the cells and a 3-pixel margin, as for the exosome channel.
    around = ndi.maximum_filter(cells > 0, size=7)
    for name, image in images.items():
        region = {"cell": cells, "nucleus": np.where(nuclei > 0, cells, 0),
                  "cytoplasm": np.where(nuclei > 0, 0, cells)}[compartments.get(name, "cell")]
        corrected = image.astype(np.float32) - background_surface(image, exclude=around)
        flat = region.ravel()
        count = np.bincount(flat, minlength=n + 1)[1:n + 1]
        integrated = np.bincount(flat, weights=corrected.ravel(), minlength=n + 1)[1:n + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            table[f"{name}_mean"] = np.where(count > 0, integrated / np.maximum(count, 1), np.nan)
        table[f"{name}_integrated"] = np.where(count > 0, integrated, np.nan)
    return table


def _two_normals(values: np.ndarray, cut: float, *, iterations: int = 100):
    """Weights, means and standard deviations of a two-normal mixture fitted by EM from the
    split at ``cut``."""
    low = values <= cut
    weight = np.array([low.mean(), 1 - low.mean()])
    mean = np.array([values[low].mean(), values[~low].mean()])
    sd = np.array([values[low].std(), values[~low].std()]) + 1e-9
    for _ in range(iterations):
        density = weight[:, None] * stats.norm.pdf(values[None], mean[:, None], sd[:, None]) + 1e-300
        share = density / density.sum(axis=0)
        weight = share.mean(axis=1)
        mean = (share * values).sum(axis=1) / share.sum(axis=1)
        sd = np.sqrt((share * (values - mean[:, None]) ** 2).sum(axis=1) / share.sum(axis=1)) + 1e-9
    return weight, mean, sd


def _reference_gate(scaled: np.ndarray) -> tuple[float, str]:
    """Gate on the arcsinh scale and the rule that set it (module docstring)."""
    values = np.sort(scaled[np.isfinite(scaled)])
    if len(values) == 0:
        return np.nan, "no cells"
    negative, rule = values, ONE_POPULATION
    if len(values) >= 10 and np.ptp(values) > 0:
        from skimage.filters import threshold_otsu

        cut = threshold_otsu(values)
        weight, mean, sd = _two_normals(values, cut)
        if _ashman_d(mean, sd) >= MIN_ASHMAN_D and weight.min() >= MIN_CLASS_FRACTION:
            lo, hi = np.argsort(mean)
            grid = np.linspace(mean[lo], mean[hi], 512)
            # Equal priors: the gate does not move with the share of positive cells.
            gap = stats.norm.logpdf(grid, mean[lo], sd[lo]) - stats.norm.logpdf(grid, mean[hi], sd[hi])
            return float(grid[np.argmin(np.abs(gap))]), "two populations: where their fitted densities meet"
        low, high = values[values <= cut], values[values > cut]
        if (min(len(low), len(high)) >= max(2, MIN_CLASS_FRACTION * len(values))
                and _ashman_d([low.mean(), high.mean()], [low.std(), high.std()]) >= MIN_ASHMAN_D):
            negative, rule = low, "two populations: upper tail of the lower one"
    centre = np.median(negative)
    flank = centre - negative[negative < centre]
    sd = np.median(flank) / 0.6745 if len(flank) else 0.0
    return float(centre + NEGATIVE_TAIL_Z * sd), rule


def _ashman_d(mean, sd) -> float:
    return float(np.sqrt(2) * abs(mean[1] - mean[0]) / max(np.sqrt(sd[0] ** 2 + sd[1] ** 2), 1e-12))


def gate(values, *, cofactor: float) -> tuple[float, str]:
    """Positivity threshold (intensity units) from reference cells' marker means, and the rule
    that set it (:data:`ONE_POPULATION` when the reference was taken as all negative). See the
    module docstring.
    """
    scaled = np.arcsinh(np.asarray(values, float) / cofactor)
    threshold, rule = _reference_gate(scaled)
    return float(cofactor * np.sinh(threshold)), rule


def sample_summary(cell_table: pd.DataFrame, names: list[str], thresholds: dict[str, float]) -> dict:
    """Per-sample marker headline: ``<m>_pct_positive``, ``m2_m1_positive_ratio``,
    ``<m>_spearman_puncta`` and ``<m>_pct_positive_uptake_<bin>`` (with ``n_cells_uptake_<bin>``).

    ``thresholds`` maps marker name to the gate on ``<m>_mean``.
    """
    out = {}
    puncta = cell_table["puncta_count"].to_numpy(float)
    for low, high in UPTAKE_BINS:
        out[f"n_cells_uptake_{bin_label(low, high)}"] = int(((puncta >= low) & (puncta <= high)).sum())
    pct = {}
    for name in names:
        values = cell_table[f"{name}_mean"].to_numpy(float)
        measured = np.isfinite(values)
        positive = values > thresholds[name]
        pct[name] = 100 * positive[measured].mean() if measured.any() else np.nan
        out[f"{name}_pct_positive"] = pct[name]
        both = measured & np.isfinite(puncta)
        rho = stats.spearmanr(puncta[both], values[both]).statistic if both.sum() >= 3 else np.nan
        out[f"{name}_spearman_puncta"] = float(rho) if np.isfinite(rho) else np.nan
        for low, high in UPTAKE_BINS:
            members = measured & (puncta >= low) & (puncta <= high)
            out[f"{name}_pct_positive_uptake_{bin_label(low, high)}"] = (
                100 * positive[members].mean() if members.any() else np.nan)
    m2 = [n for n in names if marker_class(n) == "M2"]
    m1 = [n for n in names if marker_class(n) == "M1"]
    if m2 and m1:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["m2_m1_positive_ratio"] = float(np.float64(pct[m2[0]]) / np.float64(pct[m1[0]]))
    return out


def add_markers(result, image: io.Image, *, mapping: dict, options: dict | None) -> None:
    """Measure and gate the sample's marker channels into a fluorescence result, in place.

    ``result`` is a :class:`exotrack.fluorescence.Result`; its ``cell_table`` gains
    ``<m>_mean``, ``<m>_integrated`` and ``<m>_positive`` (per-sample gate), its metrics
    ``marker_metrics`` (the headline of :func:`sample_summary`, which ``samples.csv`` takes up)
    and ``markers`` (per marker: channel, compartment, class, cofactor, threshold, gate rule).
    Nothing happens when no marker is named. Raises :class:`io.InputError` when a named marker
    channel is not in the image, or markers are named without a nuclei channel.
    """
    options = {**DEFAULTS, **(options or {})}
    names = marker_names(mapping, options)
    if not names:
        return
    if not mapping.get("nuclei"):
        raise io.InputError("marker channels are measured per cell: give a nuclei channel")
    index = {name: io.resolve_channel(image, name, role=f"marker {name}") for name in names}
    compartments = {name: options["compartments"].get(name, options["compartment"]) for name in names}
    unknown = {c for c in compartments.values() if c not in COMPARTMENTS}
    if unknown:
        raise io.InputError(f"unknown marker compartment(s) {sorted(unknown)}; use one of {COMPARTMENTS}")
    tables = []
    for frame in range(image.n_frames):
        planes = {name: image.data[frame, i] if image.is_3d else image.data[frame, i, 0]
                  for name, i in index.items()}
        cells = result.cells[frame] if image.is_3d else result.cells[frame][0]
        nuclei = result.nuclei[frame] if image.is_3d else result.nuclei[frame][0]
        tables.append(measure_markers(cells, nuclei, planes, compartments=compartments).assign(frame=frame))
    measured = pd.concat(tables, ignore_index=True)
    table = result.cell_table.merge(measured, on=["frame", "cell_id"], how="left")
    record, warnings = {}, []
    for name, i in index.items():
        cofactor = max(pixel_noise(image.data[0, i]), 1e-6)
        threshold, rule = gate(table[f"{name}_mean"], cofactor=cofactor)
        table[f"{name}_positive"] = table[f"{name}_mean"] > threshold
        record[name] = {"channel": image.channel_names[i], "compartment": compartments[name],
                        "class": marker_class(name), "cofactor": cofactor, "threshold": threshold,
                        "gate": f"sample: {rule}"}
        if table[f"{name}_mean"].notna().sum() < 20:
            warnings.append(f"{name}: {table[f'{name}_mean'].notna().sum()} cells only; the sample's own gate is "
                            "rough (markers.csv gates on the control group's pooled cells)")
        elif rule == ONE_POPULATION:
            warnings.append(f"{name}: the cells form one population; gated as if all were negative "
                            "(the study's control gate in markers.csv does not assume this)")
    result.cell_table = table
    result.metrics["marker_metrics"] = sample_summary(table, names, {n: r["threshold"] for n, r in record.items()})
    result.metrics["markers"] = record
    result.metrics.setdefault("warnings", []).extend(warnings)


def study_gates(cells: dict[str, pd.DataFrame], metrics: dict[str, dict], groups: dict[str, str], *,
                control: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Re-gate every sample's cells on the control group's cells (``results/tables/markers.csv``).

    Parameters
    ----------
    cells : dict
        Sample -> its ``cells.csv`` table (with ``<m>_mean`` and ``puncta_count``).
    metrics : dict
        Sample -> its ``metrics.json`` (``markers`` record; samples without one are skipped).
    groups : dict
        Sample -> group.
    control : str
        The control group; without control cells for a marker, each sample's own gate stands.

    Returns
    -------
    The per-sample, per-marker table and the gates (one row per marker).
    """
    per_marker = {}
    for sample, record in metrics.items():
        for name, info in (record.get("markers") or {}).items():
            per_marker.setdefault(name, []).append((sample, info))
    rows, gates = [], []
    for name, entries in per_marker.items():
        reference = [cells[s][f"{name}_mean"].to_numpy(float) for s, _ in entries if groups.get(s) == control]
        reference = np.concatenate(reference) if reference else np.zeros(0)
        reference = reference[np.isfinite(reference)]
        cofactor = float(np.median([info["cofactor"] for _, info in entries]))
        if len(reference) >= 10:
            threshold, rule = gate(reference, cofactor=cofactor)
            rule = f"control group {control!r} ({len(reference)} cells): {rule}"
        else:
            threshold, rule = None, "no control cells: each sample's own gate"
        gates.append({"marker": name, "class": marker_class(name), "threshold": threshold,
                      "n_control_cells": len(reference), "gate": rule})
        for sample, info in entries:
            table = cells[sample]
            used = info["threshold"] if threshold is None else threshold
            summary = sample_summary(table, [name], {name: used})
            rows.append({"sample": sample, "group": groups.get(sample, ""), "marker": name,
                         "class": marker_class(name), "compartment": info["compartment"],
                         "n_cells": int(np.isfinite(table[f"{name}_mean"]).sum()), "threshold": used,
                         "gate": "control" if threshold is not None else "sample",
                         "pct_positive": summary[f"{name}_pct_positive"],
                         "pct_positive_sample_gate": sample_summary(
                             table, [name], {name: info["threshold"]})[f"{name}_pct_positive"],
                         "spearman_puncta": summary[f"{name}_spearman_puncta"],
                         **{k.replace(f"{name}_", ""): v for k, v in summary.items() if "uptake" in k}})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.merge(_ratios(table), on="sample", how="left")
    return table, pd.DataFrame(gates)


def _ratios(table: pd.DataFrame) -> pd.DataFrame:
    """``m2_m1_positive_ratio`` per sample: first M2 over first M1 marker's % positive."""
    out = []
    for sample, block in table.groupby("sample", sort=False):
        m2, m1 = block[block["class"] == "M2"], block[block["class"] == "M1"]
        ratio = np.nan
        if len(m2) and len(m1) and m1["pct_positive"].iloc[0] > 0:
            ratio = m2["pct_positive"].iloc[0] / m1["pct_positive"].iloc[0]
        out.append({"sample": sample, "m2_m1_positive_ratio": ratio})
    return pd.DataFrame(out)
