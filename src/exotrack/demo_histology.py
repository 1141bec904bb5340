"""Synthetic lymph-node sections with known marker-positive cells.

Brightfield fields are rendered by the Beer-Lambert law from known amounts of hematoxylin and
DAB, so each cell's class (negative, 1+, 2+, 3+ by the mean DAB optical density of the compartment
the marker stains) is known; immunofluorescence fields carry the same geometry in a nuclear and a
marker channel.

The generator carries its own physics: the stain absorption vectors are Ruifrok & Johnston's
published measurements (Anal Quant Cytol Histol 2001, table 1), not the analyser's, and
:func:`family_section` draws every rendering choice (stain vectors, staining pattern, pale
nuclei, light source, JPEG compression, magnification, tissue density) so that tests do not share
the analyser's assumptions.
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

# Ruifrok & Johnston (2001), optical density per R, G, B of hematoxylin and of DAB.
RJ_HEMATOXYLIN = (0.650, 0.704, 0.286)
RJ_DAB = (0.268, 0.570, 0.776)
# The intensity classes are defined by these DAB cut-offs (QuPath's published defaults).
DAB_CUTOFFS = (0.2, 0.4, 0.6)
# DAB optical density per class; most cells sit inside their class, a share ``borderline`` of
# them within 0.03 of a cut-off.
_DAB_LEVELS = [(0.0, 0.12), (0.25, 0.35), (0.45, 0.55), (0.68, 0.95)]
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


def _nuclei(rng, tissue, *, pixel_size_um, spacing_um, radius_um=(2.8, 3.8)):
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
        a = rng.uniform(*radius_um) / pixel_size_um
        b = a * rng.uniform(0.7, 1.0)
        rr, cc = draw.ellipse(y, x, a, b, shape=shape, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = np.where(labels[rr, cc] == 0, index, labels[rr, cc])
    return labels, np.array(centres)


def simulate_section(*, shape=(768, 768), pixel_size_um: float = 0.5, fractions=(0.2, 0.1, 0.05),
                     kind: str = "brightfield", glass_fraction: float = 0.2, spacing_um: float = 9.0,
                     nucleus_radius_um=(2.8, 3.8), cell_expansion_um: float = 5.5,
                     stain_vectors=(RJ_HEMATOXYLIN, RJ_DAB), staining: str = "cytoplasm",
                     hematoxylin_od=(0.4, 0.7), light=(242.0, 240.0, 236.0), borderline: float = 0.05,
                     seed: int = 0) -> Section:
    """A lymph-node section whose cells are negative, 1+, 2+ or 3+ with probabilities
    ``1 - sum(fractions)``, ``fractions[0]``, ``fractions[1]``, ``fractions[2]``.

    Cells are nuclei (radii drawn from ``nucleus_radius_um``) grown by ``cell_expansion_um`` until
    they meet. ``staining`` says where the marker is: ``nucleus`` (granular nuclear DAB),
    ``membrane`` (concentrated at the cell border) or ``cytoplasm`` (filling the ring, a brighter
    membrane and granules), scaled so that each cell's compartment mean (the nucleus, or the
    cytoplasm ring) is its drawn level. A share ``borderline`` of the cells has a level within
    0.03 of a class cut-off. Brightfield: Beer-Lambert rendering of hematoxylin (each nucleus's
    amount drawn from ``hematoxylin_od``) and DAB with ``stain_vectors`` under ``light``, a
    little blur and camera noise. Fluorescence: Poisson photons plus camera offset and read noise.
    """
    rng = np.random.default_rng(seed)
    tissue = _tissue(rng, shape, glass_fraction)
    nuclei, centres = _nuclei(rng, tissue, pixel_size_um=pixel_size_um, spacing_um=spacing_um,
                              radius_um=nucleus_radius_um)
    cells = segmentation.expand_labels(nuclei, cell_expansion_um / pixel_size_um) * tissue
    n = int(nuclei.max())
    probabilities = [1 - sum(fractions), *fractions]
    classes = rng.choice(4, size=n, p=probabilities)
    if kind == "fluorescence":
        levels = np.array([rng.uniform(*_IF_LEVELS[k]) for k in classes])
    else:
        levels = np.array([rng.uniform(*_DAB_LEVELS[k]) for k in classes])
        near = rng.random(n) < borderline
        cut = np.asarray(DAB_CUTOFFS)[rng.integers(0, 3, n)]
        levels = np.where(near, cut + rng.uniform(-0.03, 0.03, n), levels)
        classes = np.searchsorted(DAB_CUTOFFS, levels, side="right")
    cytoplasm = np.where(nuclei > 0, 0, cells)
    region = nuclei * tissue if staining == "nucleus" else cytoplasm
    grain = rng.gamma(6.0, 1 / 6.0, size=shape)
    if staining == "nucleus":
        pattern = ndi.gaussian_filter(rng.gamma(3.0, 1 / 3.0, size=shape), 0.8 / pixel_size_um) + 0.3
    else:
        edge = segmentation.find_boundaries(cells, mode="inner")
        near_edge = ndi.distance_transform_edt(~edge) * pixel_size_um
        rim = 3.0 if staining == "membrane" else 1.5
        pattern = ndi.gaussian_filter((1.0 + rim * np.exp(-near_edge / 0.6)) * grain, 0.7)
    sums = np.bincount(region.ravel(), weights=pattern.ravel(), minlength=n + 1)
    counts = np.bincount(region.ravel(), minlength=n + 1)
    norm = np.where(counts > 0, counts / np.maximum(sums, 1e-9), 0)
    lut = np.concatenate([[0.0], levels])
    marker = np.where(region > 0, pattern * norm[region] * lut[region], 0.0)
    table = pd.DataFrame({"cell_id": np.arange(1, n + 1), "y": centres[:, 0], "x": centres[:, 1],
                          "class": classes, "level": levels})
    keep = (np.bincount(cytoplasm.ravel(), minlength=n + 1)[1:] > 0) & (counts[1:] > 0)
    table = table[keep].reset_index(drop=True)
    texture = ndi.gaussian_filter(rng.gamma(4.0, 0.25, size=shape), 1.0)
    if kind == "fluorescence":
        image = _render_fluorescence(rng, nuclei, tissue, marker, texture)
    else:
        amount = np.concatenate([[0.0], rng.uniform(*hematoxylin_od, n)])
        image = _render_brightfield(rng, nuclei, tissue, marker, texture * amount[nuclei], stain_vectors,
                                    light=light, pixel_size_um=pixel_size_um)
    return Section(image, table, tissue, nuclei, pixel_size_um)


def _render_brightfield(rng, nuclei, tissue, dab, hema_nuclei, stain_vectors, *, light, pixel_size_um):
    hema = np.where(nuclei > 0, hema_nuclei, 0.0) + np.where(tissue, 0.05, 0.0)
    dab = dab + np.where(tissue, 0.015, 0.0)  # a little non-specific DAB
    blur = 0.35 / pixel_size_um  # the objective's blur, about 0.35 µm
    hema, dab = ndi.gaussian_filter(hema, blur), ndi.gaussian_filter(dab, blur)
    h, d = (np.asarray(v, float) / np.linalg.norm(v) for v in stain_vectors)
    od = hema[..., None] * h + dab[..., None] * d
    rgb = np.asarray(light, float) * 10.0 ** (-od)
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


# Marker rendered per staining pattern, so that the analyser picks the compartment from the name;
# membranous CD206 is measured, as QuPath users do, over the cytoplasm ring that includes it.
FAMILY_MARKERS = {"nucleus": "Ki67", "membrane": "CD206", "cytoplasm": "CD68"}


def _turned(vector, rng, max_deg):
    """``vector`` (unit length) turned by up to ``max_deg`` in a random direction."""
    v = np.asarray(vector, float) / np.linalg.norm(vector)
    other = rng.normal(size=3)
    other -= (other @ v) * v
    other /= np.linalg.norm(other)
    angle = np.radians(rng.uniform(0, max_deg))
    return np.abs(np.cos(angle) * v + np.sin(angle) * other)


def family_section(seed: int, *, shape_um: float = 200.0) -> tuple[Section, dict, bytes | None]:
    """A brightfield section whose every rendering choice is drawn, for tests that must not share
    the analyser's assumptions.

    Drawn: the stain vectors (up to 8° from Ruifrok & Johnston's), the staining pattern (nuclear,
    membranous or cytoplasmic, with the marker named for it in :data:`FAMILY_MARKERS`), pale
    nuclei (hematoxylin from 0.12-0.3 OD up), the light source's colour cast, 20x or 40x pixels,
    dense lymphoid tissue (small nuclei edge to edge) or looser stroma, the cell size, the class
    fractions, and JPEG compression (quality 60-95) for half of the sections.

    Returns the section, the drawn parameters, and the JPEG file's bytes (``None``: lossless).
    """
    rng = np.random.default_rng(10_000 + seed)
    pixel_size_um = float(rng.choice([0.25, 0.5]))
    staining = str(rng.choice(["nucleus", "membrane", "cytoplasm"]))
    dense = bool(rng.random() < 0.35)
    params = {
        "pixel_size_um": pixel_size_um, "staining": staining, "marker": FAMILY_MARKERS[staining],
        "dense": dense,
        "stain_vectors": (_turned(RJ_HEMATOXYLIN, rng, 8.0), _turned(RJ_DAB, rng, 8.0)),
        "hematoxylin_od": (float(rng.uniform(0.12, 0.3)), float(rng.uniform(0.5, 0.8))),
        "light": tuple(float(v) for v in rng.uniform(222, 252, 3)),
        "spacing_um": float(rng.uniform(6.0, 7.0) if dense else rng.uniform(8.5, 12.0)),
        "nucleus_radius_um": (2.3, 3.0) if dense else (2.8, 4.0),
        "cell_expansion_um": float(rng.uniform(1.5, 3.0) if dense else rng.uniform(3.5, 6.5)),
        "fractions": tuple(float(v) for v in rng.dirichlet([2, 1.5, 1, 0.7]) * rng.uniform(0.1, 0.8))[:3],
        "glass_fraction": float(rng.choice([0.0, 0.2])),
        "jpeg_quality": int(rng.integers(60, 96)) if rng.random() < 0.5 else None,
    }
    side = int(round(shape_um / pixel_size_um))
    section = simulate_section(
        shape=(side, side), pixel_size_um=pixel_size_um, fractions=params["fractions"],
        glass_fraction=params["glass_fraction"], spacing_um=params["spacing_um"],
        nucleus_radius_um=params["nucleus_radius_um"], cell_expansion_um=params["cell_expansion_um"],
        stain_vectors=params["stain_vectors"], staining=staining, hematoxylin_od=params["hematoxylin_od"],
        light=params["light"], seed=20_000 + seed)
    encoded = None
    if params["jpeg_quality"]:
        import io as _io

        from PIL import Image as PILImage

        buffer = _io.BytesIO()
        PILImage.fromarray(section.image).save(buffer, "JPEG", quality=params["jpeg_quality"])
        encoded = buffer.getvalue()
    return section, params, encoded


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
