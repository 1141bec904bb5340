"""Synthetic ultrasound-guided photoacoustic volumes with a known lymph node.

B-mode: an anechoic coupling gel, a bright skin line, tissue with fully developed speckle
(Rayleigh envelope of a blurred complex Gaussian field) and a hypoechoic oval node with a brighter
capsule. PA at each wavelength: fluence falling with depth times the absorption of HbO2 and Hb
(known sO2 and HbT per voxel; the node with or without a hypoxic metastatic region; vessels
around it), melanin in the skin, blur and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .io import write_ome_tiff
from .photoacoustic import extinction

VOXEL_UM = (150.0, 50.0, 75.0)  # z (sweep step), y (depth), x (lateral)


@dataclass
class Volume:
    image: np.ndarray  # (C, Z, Y, X) float32: US then PA per wavelength
    channel_names: list[str]
    node: np.ndarray  # bool (Z, Y, X)
    so2: np.ndarray  # true sO2 per voxel
    voxel_size_um: tuple

    @property
    def node_volume_mm3(self) -> float:
        return float(self.node.sum()) * float(np.prod(self.voxel_size_um)) / 1e9

    @property
    def node_so2(self) -> float:
        return float(self.so2[self.node].mean())


def simulate_volume(*, shape=(28, 160, 200), voxel_size_um=VOXEL_UM, radii_mm=(1.0, 0.8, 1.4),
                    depth_mm: float = 3.6, node_so2: float = 0.75, hypoxic: bool = False,
                    wavelengths=(750, 850), seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    size = np.asarray(voxel_size_um) / 1000  # mm
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    z_mm, y_mm, x_mm = zz * size[0], yy * size[1], xx * size[2]
    centre = np.array([shape[0] * size[0] / 2, depth_mm, shape[2] * size[2] / 2]) + rng.normal(0, 0.2, 3) * [1, 0.3, 1]
    # An oval with a slightly irregular outline.
    wobble = 1 + 0.06 * np.sin(3 * np.arctan2(y_mm - centre[1], x_mm - centre[2]) + rng.uniform(0, 6))
    r = np.sqrt(((z_mm - centre[0]) / radii_mm[0]) ** 2 + ((y_mm - centre[1]) / radii_mm[1]) ** 2
                + ((x_mm - centre[2]) / radii_mm[2]) ** 2) / wobble
    node = r < 1
    capsule = (r >= 1) & (r < 1 + 0.12 / min(radii_mm))
    skin_top = 1.0 + 0.1 * np.sin(x_mm / 3 + rng.uniform(0, 6))
    gel = y_mm < skin_top
    skin = (y_mm >= skin_top) & (y_mm < skin_top + 0.2)

    echo = np.where(gel, 0.03, 1.0) * (1 + 0.15 * ndi.gaussian_filter(rng.normal(size=shape), 6))
    echo = np.where(skin, 2.5, echo)
    echo = np.where(capsule & ~gel, 1.8, echo)
    echo = np.where(node, 0.3, echo)
    field = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    field = ndi.gaussian_filter(field.real, (0.8, 1.0, 1.5)) + 1j * ndi.gaussian_filter(field.imag, (0.8, 1.0, 1.5))
    field /= np.sqrt(np.mean(np.abs(field) ** 2))
    us = np.abs(field) * echo + np.abs(rng.normal(0, 0.02, shape))

    hbt = np.where(gel, 0.0, 0.3)
    so2 = np.where(gel, 0.0, 0.8) + np.zeros(shape)
    so2 = np.where(node, node_so2, so2)
    hbt = np.where(node, 1.0, hbt)
    if hypoxic:  # a metastatic region in one pole of the node, poorly oxygenated
        meta = node & (np.sqrt(((z_mm - centre[0]) / radii_mm[0]) ** 2 + ((y_mm - centre[1]) / radii_mm[1]) ** 2
                               + ((x_mm - centre[2] - 0.5 * radii_mm[2]) / (0.6 * radii_mm[2])) ** 2) < 1)
        so2 = np.where(meta, 0.35, so2)
        hbt = np.where(meta, 0.8, hbt)
    for offset in (-1.8, 1.9):  # vessels beside the node, along the sweep
        vessel = ((y_mm - centre[1] - 0.3) ** 2 + (x_mm - centre[2] - offset * radii_mm[2]) ** 2) < 0.15 ** 2
        hbt = np.where(vessel, 3.0, hbt)
        so2 = np.where(vessel, 0.95 if offset < 0 else 0.65, so2)
    fluence = np.exp(-0.3 * np.clip(y_mm - skin_top, 0, None))
    channels = [us.astype(np.float32)]
    spectra = extinction(wavelengths) / 1000
    for (e_hbo2, e_hb), nm in zip(spectra, wavelengths):
        absorption = hbt * (so2 * e_hbo2 + (1 - so2) * e_hb)
        melanin = np.where(skin, 2.0 * (750 / nm) ** 3.5, 0.0)
        pa = ndi.gaussian_filter(fluence * absorption + melanin, (0.7, 1.0, 1.0))
        channels.append((pa + rng.normal(0, 0.01, shape)).astype(np.float32))
    return Volume(np.stack(channels), ["US"] + [f"PA{w}" for w in wavelengths], node, np.where(node, so2, np.nan),
                  tuple(voxel_size_um))


def write_demo_volumes(directory, *, seed: int = 0) -> list[dict]:
    """The demo cohort's axillary nodes on day 21 (m1-m3 PBS: normal nodes; m4-m6 exosome: larger
    nodes with a hypoxic metastatic region), as OME-TIFF ``CZYX`` stacks with truth under
    ``truth/<sample>/``; returns the sample-sheet rows."""
    directory = Path(directory)
    rows = []
    for k, (mouse, group) in enumerate([("m1", "PBS"), ("m2", "PBS"), ("m3", "PBS"),
                                        ("m4", "exosome"), ("m5", "exosome"), ("m6", "exosome")]):
        rng = np.random.default_rng(seed * 1000 + 900 + k)
        scale = rng.uniform(0.85, 1.1) * (1.25 if group == "exosome" else 1.0)
        volume = simulate_volume(radii_mm=(0.9 * scale, 0.7 * scale, 1.2 * scale), node_so2=rng.uniform(0.7, 0.8),
                                 hypoxic=group == "exosome", seed=seed * 1000 + 900 + k)
        sample = f"{mouse}_pa"
        rel = Path("photoacoustic") / f"{sample}.ome.tif"
        write_ome_tiff(directory / rel, volume.image, axes="CZYX", channel_names=volume.channel_names,
                       pixel_size_um=volume.voxel_size_um)
        truth = directory / "truth" / sample
        truth.mkdir(parents=True, exist_ok=True)
        np.save(truth / "node.npy", volume.node)
        pd.DataFrame([{"volume_mm3": volume.node_volume_mm3, "so2_mean": volume.node_so2}]).to_csv(
            truth / "node.csv", index=False)
        rows.append({"sample": sample, "modality": "photoacoustic", "group": group, "subject": mouse, "timepoint": 21,
                     "marker": "", "channels": "", "path": rel.as_posix()})
    return rows
