"""Synthetic lymph-node sections with known marker-positive macrophages.

Brightfield fields are rendered by the Beer-Lambert law from known amounts of hematoxylin and
DAB, so each cell's class (negative, 1+, 2+, 3+ by the mean DAB optical density of its cytoplasm)
is known; immunofluorescence fields carry the same geometry in a nuclear and a marker channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from skimage import draw, segmentation

from .histology import DAB, HEMATOXYLIN

# Cytoplasm DAB optical density per class, clear of QuPath's 0.2 / 0.4 / 0.6 thresholds.
_DAB_LEVELS = [(0.0, 0.1), (0.26, 0.34), (0.46, 0.54), (0.7, 0.95)]
# Immunofluorescence marker per class, as fold over unstained tissue (thresholds 2 / 3 / 5).
_IF_LEVELS = [(0.85, 1.15), (2.3, 2.7), (3.5, 4.4), (6.0, 8.0)]


@dataclass
class Section:
    image: np.ndarray  # (Y, X, 3) uint8 RGB, or (2, Y, X) uint16 nuclear + marker
    cells: pd.DataFrame  # cell_id, y, x, class, level
    tissue: np.ndarray  # bool
    nuclei: np.ndarray  # labels
    pixel_size_um: float

    @property
    def positive_pct(self) -> float:
        return 100.0 * float(np.mean(self.cells["class"] > 0))

    @property
    def h_score(self) -> float:
        pct = 100.0 * np.bincount(self.cells["class"], minlength=4) / len(self.cells)
        return float(pct[1] + 2 * pct[2] + 3 * pct[3])


def _tissue(rng, shape, glass_fraction):
    """An irregular tissue edge with bare glass on one side."""
    if glass_fraction <= 0:
        return np.ones(shape, bool)
    ramp = np.linspace(0, 1, shape[1])[None, :] * np.ones(shape)
    wobble = ndi.gaussian_filter(rng.normal(size=shape), 40)
    wobble /= np.abs(wobble).max() + 1e-9
    return ramp + 0.12 * wobble > glass_fraction


def _nuclei(rng, tissue, *, pixel_size_um, spacing_um):
    """Elliptical nuclei placed by random sequential addition at least ``spacing_um`` apart."""
    shape = tissue.shape
    labels = np.zeros(shape, np.int32)
    spacing = spacing_um / pixel_size_um
    centres = []
    candidates = rng.uniform([0, 0], shape, size=(int(4 * tissue.size / spacing ** 2), 2))
    grid = {}
    for y, x in candidates:
        if not tissue[int(y), int(x)]:
            continue
        key = (int(y // spacing), int(x // spacing))
        near = [c for dy in (-1, 0, 1) for dx in (-1, 0, 1) for c in grid.get((key[0] + dy, key[1] + dx), [])]
        if any((y - cy) ** 2 + (x - cx) ** 2 < spacing ** 2 for cy, cx in near):
            continue
        grid.setdefault(key, []).append((y, x))
        centres.append((y, x))
    for index, (y, x) in enumerate(centres, start=1):
        a = rng.uniform(2.8, 3.8) / pixel_size_um
        b = a * rng.uniform(0.7, 1.0)
        rr, cc = draw.ellipse(y, x, a, b, shape=shape, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = np.where(labels[rr, cc] == 0, index, labels[rr, cc])
    return labels, np.array(centres)


def simulate_section(*, shape=(768, 768), pixel_size_um: float = 0.5, fractions=(0.2, 0.1, 0.05),
                     kind: str = "brightfield", glass_fraction: float = 0.2, spacing_um: float = 9.0,
                     cell_expansion_um: float = 5.0, stain_vectors=(HEMATOXYLIN, DAB), seed: int = 0) -> Section:
    """A lymph-node section whose cells are negative, 1+, 2+ or 3+ with probabilities
    ``1 - sum(fractions)``, ``fractions[0]``, ``fractions[1]``, ``fractions[2]``.

    Cells are nuclei grown by ``cell_expansion_um`` until they meet; the marker fills the
    cytoplasm with a brighter membrane and a granular texture, scaled so that each cell's
    cytoplasm mean is its drawn level. Brightfield: Beer-Lambert rendering of hematoxylin and DAB
    with ``stain_vectors``, a slightly tinted light source, a little blur and 8-bit camera noise.
    Fluorescence: Poisson photons plus camera offset and read noise.
    """
    rng = np.random.default_rng(seed)
    tissue = _tissue(rng, shape, glass_fraction)
    nuclei, centres = _nuclei(rng, tissue, pixel_size_um=pixel_size_um, spacing_um=spacing_um)
    cells = segmentation.expand_labels(nuclei, cell_expansion_um / pixel_size_um) * tissue
    n = int(nuclei.max())
    probabilities = [1 - sum(fractions), *fractions]
    classes = rng.choice(4, size=n, p=probabilities)
    table_levels = _IF_LEVELS if kind == "fluorescence" else _DAB_LEVELS
    levels = np.array([rng.uniform(*table_levels[k]) for k in classes])
    cytoplasm = np.where(nuclei > 0, 0, cells)
    # Membrane: brighter near the cell's border; texture: granules.
    edge = segmentation.find_boundaries(cells, mode="inner")
    near_edge = ndi.distance_transform_edt(~edge) * pixel_size_um
    pattern = (1.0 + 1.5 * np.exp(-near_edge / 0.8)) * rng.gamma(6.0, 1 / 6.0, size=shape)
    pattern = ndi.gaussian_filter(pattern, 0.7)
    sums = np.bincount(cytoplasm.ravel(), weights=pattern.ravel(), minlength=n + 1)
    counts = np.bincount(cytoplasm.ravel(), minlength=n + 1)
    norm = np.where(counts > 0, counts / np.maximum(sums, 1e-9), 0)
    lut = np.concatenate([[0.0], levels])
    marker = np.where(cytoplasm > 0, pattern * norm[cytoplasm] * lut[cytoplasm], 0.0)
    table = pd.DataFrame({"cell_id": np.arange(1, n + 1), "y": centres[:, 0], "x": centres[:, 1],
                          "class": classes, "level": levels})
    keep = counts[1:] > 0
    table = table[keep].reset_index(drop=True)
    texture = ndi.gaussian_filter(rng.gamma(4.0, 0.25, size=shape), 1.0)
    if kind == "fluorescence":
        image = _render_fluorescence(rng, nuclei, tissue, marker, texture)
    else:
        image = _render_brightfield(rng, nuclei, tissue, marker, texture, stain_vectors)
    return Section(image, table, tissue, nuclei, pixel_size_um)


def _render_brightfield(rng, nuclei, tissue, dab, texture, stain_vectors):
    hema = np.where(nuclei > 0, 0.55 * texture, 0.0) + np.where(tissue, 0.05, 0.0)
    dab = dab + np.where(tissue, 0.015, 0.0)  # a little non-specific DAB
    hema, dab = ndi.gaussian_filter(hema, 0.7), ndi.gaussian_filter(dab, 0.7)
    h, d = (np.asarray(v, float) / np.linalg.norm(v) for v in stain_vectors)
    od = hema[..., None] * h + dab[..., None] * d
    light = np.array([242.0, 240.0, 236.0])
    rgb = light * 10.0 ** (-od)
    rgb = rgb + rng.normal(0, 2.0, rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _render_fluorescence(rng, nuclei, tissue, marker, texture):
    nuclear = np.where(nuclei > 0, 800.0 * texture, 0.0) + np.where(tissue, 30.0, 0.0)
    # Unstained tissue glows faintly (autofluorescence): the marker's "1x" level.
    signal = np.where(tissue, 60.0, 0.0) * np.where(marker > 0, marker, 1.0)
    planes = []
    for plane in (nuclear, signal):
        photons = rng.poisson(ndi.gaussian_filter(plane, 1.0) + 5.0)
        planes.append(np.clip(photons + 100 + rng.normal(0, 3.0, plane.shape), 0, 65535).astype(np.uint16))
    return np.stack(planes)


def write_section_tiff(path, image: np.ndarray, *, pixel_size_um: float, tile: int = 256, levels: int = 1) -> None:
    """Write an RGB section as a tiled TIFF with ``levels - 1`` reduced-resolution sub-IFDs (a
    pyramid, as slide scanners write them) and its pixel size in the resolution tags."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    resolution = (1e4 / pixel_size_um, 1e4 / pixel_size_um)
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2 ** 31) as tif:
        options = dict(photometric="rgb", tile=(tile, tile), compression="zlib")
        tif.write(image, subifds=levels - 1, resolution=resolution, resolutionunit="CENTIMETER", **options)
        for level in range(1, levels):
            image = image[::2, ::2]
            tif.write(image, subfiletype=1, **options)


# Fractions of 1+, 2+, 3+ cells by marker and group: M2 (CD206) macrophages rise after exosomes.
_DEMO_FRACTIONS = {
    ("CD206", "PBS"): (0.12, 0.06, 0.03), ("CD206", "exosome"): (0.22, 0.14, 0.08),
    ("NOS2", "PBS"): (0.08, 0.04, 0.01), ("NOS2", "exosome"): (0.06, 0.02, 0.01),
}


def write_demo_sections(directory, *, seed: int = 0, day: int = 21) -> list[dict]:
    """IHC sections of the demo cohort's lymph nodes (three mice per group, CD206 and NOS2 each)
    with their truth under ``truth/<sample>/``; returns the sample-sheet rows. One section is a
    tiled pyramidal TIFF as a slide scanner writes it."""
    directory = Path(directory)
    rows = []
    index = 0
    for group, mice in (("PBS", ["m1", "m2", "m3"]), ("exosome", ["m4", "m5", "m6"])):
        for mouse in mice:
            for marker in ("CD206", "NOS2"):
                rng = np.random.default_rng(seed * 1000 + 500 + index)
                base = np.array(_DEMO_FRACTIONS[(marker, group)])
                fractions = base * rng.uniform(0.8, 1.2)  # mouse-to-mouse variation
                section = simulate_section(fractions=tuple(fractions), seed=seed * 1000 + 500 + index)
                sample = f"{mouse}_{marker}"
                rel = Path("histology") / f"{sample}.tif"
                write_section_tiff(directory / rel, section.image, pixel_size_um=section.pixel_size_um,
                                   levels=3 if index == 0 else 1)
                truth = directory / "truth" / sample
                truth.mkdir(parents=True, exist_ok=True)
                section.cells.to_csv(truth / "cells.csv", index=False)
                (truth / "summary.json").write_text(json.dumps({
                    "positive_pct": section.positive_pct, "h_score": section.h_score,
                    "tissue_area_mm2": float(section.tissue.sum()) * section.pixel_size_um ** 2 / 1e6}))
                rows.append({"sample": sample, "modality": "histology", "group": group, "subject": mouse,
                             "timepoint": day, "marker": marker, "channels": "", "path": rel.as_posix()})
                index += 1
    return rows
