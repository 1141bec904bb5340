"""Synthetic ultrasound-guided photoacoustic volumes with a known lymph node.

``simulate_volume`` (the demo): an anechoic coupling gel, a bright skin line, tissue with fully
developed speckle (Rayleigh envelope of a blurred complex Gaussian field) and a hypoechoic oval node
with a brighter capsule. PA at each wavelength: fluence falling with depth (per wavelength) times the absorption of
HbO2 and Hb (known sO2 and HbT per voxel; the node with or without a hypoxic metastatic region;
vessels around it), melanin in the skin, blur and noise.

``simulate_family`` draws B-mode / PA volumes of many appearances, as scanners make them: speckle
of any size, gain and dynamic range, log-compressed to 8 bit; gel or none; anisotropic voxels;
2-D frames and 3-D sweeps; nodes of 0.5-6 mm with or without hilum and posterior enhancement;
vessels and an anechoic cyst; light attenuated by tissue whose optical properties are drawn per
volume. It carries its own physics: nothing here comes from the analyser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .io import write_ome_tiff

VOXEL_UM = (150.0, 50.0, 75.0)  # z (sweep step), y (depth), x (lateral)

# Molar extinction (cm⁻¹/M) of HbO2 and Hb, S. Prahl, omlc.org/spectra/hemoglobin/summary.html.
_PRAHL = np.array([(700, 290.0, 1794.28), (750, 518.0, 1405.24), (800, 816.0, 761.72),
                   (850, 1058.0, 691.32), (900, 1198.0, 820.36)])
# Water absorption (cm⁻¹), Hale and Querry 1973.
_WATER = np.array([(700, 0.0060), (750, 0.0261), (800, 0.0196), (850, 0.0433), (900, 0.0678)])
_BLOOD_MOLAR = 150 / 64500  # mol/L of haemoglobin in whole blood (150 g/L, 64.5 kg/mol)


def haemoglobin_extinction(wavelengths_nm) -> np.ndarray:
    """``(n, 2)`` molar extinction (cm⁻¹/M) of (HbO2, Hb), from Prahl's table (700-900 nm)."""
    wavelengths_nm = np.asarray(wavelengths_nm, float)
    return np.stack([np.interp(wavelengths_nm, _PRAHL[:, 0], _PRAHL[:, i]) for i in (1, 2)], axis=1)


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
    # Light falls with depth below the skin, faster where tissue attenuates more (per wavelength).
    mu_eff = _tissue_mu_eff(wavelengths, blood_fraction=0.01, so2=0.8, water_fraction=0.7, scatter_a_cm=14.0,
                            scatter_b=1.1)
    depth_mm = np.clip(y_mm - skin_top, 0, None)
    channels = [us.astype(np.float32)]
    spectra = haemoglobin_extinction(wavelengths) / 1000
    for (e_hbo2, e_hb), nm, mu in zip(spectra, wavelengths, mu_eff):
        fluence = np.exp(-mu * depth_mm / 10)
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


@dataclass
class FamilyVolume(Volume):
    """A volume of :func:`simulate_family` and what was drawn for it."""

    params: dict


def _tissue_mu_eff(wavelengths_nm, *, blood_fraction, so2, water_fraction, scatter_a_cm, scatter_b):
    """Effective attenuation (cm⁻¹) of light in tissue, diffusion approximation."""
    eps = haemoglobin_extinction(wavelengths_nm)
    mu_a = (blood_fraction * np.log(10) * _BLOOD_MOLAR * (so2 * eps[:, 0] + (1 - so2) * eps[:, 1])
            + water_fraction * np.interp(wavelengths_nm, _WATER[:, 0], _WATER[:, 1]))
    mu_s = scatter_a_cm * (np.asarray(wavelengths_nm, float) / 500) ** -scatter_b
    return np.sqrt(3 * mu_a * (mu_a + mu_s))


def simulate_family(seed: int, *, node: bool = True, two_d: bool | None = None, wavelengths=(750, 850),
                    energy=None, max_voxels: int = 400_000) -> FamilyVolume:
    """One randomised B-mode + PA volume (US as 8-bit log-compressed B-mode, then PA per wavelength).

    Drawn per volume: node diameter 0.5-6 mm (log-uniform), oval axes, depth, echo level
    (-20 to -7 dB), capsule, echogenic hilum, posterior enhancement; gel thickness (or none),
    skin brightness and thickness; speckle size per axis; voxel size (anisotropic, the node 12-30
    voxels across); 2-D frame or 3-D sweep; 0-2 vessels; an anechoic cyst; gain, dynamic range
    (40-65 dB), depth-gain mismatch; tissue optics (blood and water fraction, scattering) that set
    the fluence per wavelength and depth; node and tissue sO2 and HbT. ``energy`` gives the pulse
    energy per wavelength (1 each by default).
    """
    rng = np.random.default_rng(seed)
    two_d = bool(rng.random() < 0.3) if two_d is None else two_d
    diameter = float(np.exp(rng.uniform(np.log(0.5), np.log(6.0))))
    shape_ratio = rng.uniform(0.55, 1.0, 2)
    radii = diameter / 2 * np.array([rng.uniform(0.7, 1.0), shape_ratio[0], 1.0])  # z, y (depth), x
    if rng.random() < 0.5:
        radii[[0, 2]] = radii[[2, 0]]
    gel = float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0
    skin = float(rng.uniform(0.08, 0.3))
    node_top = gel + skin + rng.uniform(0.3, 2.0)
    depth_mm = node_top + radii[1] + rng.uniform(0.8, 2.0) * diameter + 1.0
    lateral_mm = max(4.5 * radii[2] * 2, 4.0)
    pixel = diameter / rng.uniform(12, 30)
    size = np.array([0.0, pixel * rng.uniform(0.5, 1.0), pixel * rng.uniform(0.8, 1.5)])  # mm
    ny, nx = int(np.ceil(depth_mm / size[1])), int(np.ceil(lateral_mm / size[2]))
    while ny * nx > (max_voxels if two_d else max_voxels / 12):  # coarser voxels for big fields
        size[1:] *= 1.15
        ny, nx = int(np.ceil(depth_mm / size[1])), int(np.ceil(lateral_mm / size[2]))
    if two_d:
        nz, size[0] = 1, size[2]
    else:
        size[0] = 2 * radii[0] / rng.uniform(5, 10)
        nz = int(min(np.ceil(2.6 * radii[0] / size[0]) + 2, max_voxels // (ny * nx)))
    shape = (nz, ny, nx)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    z, y, x = (zz + 0.5) * size[0], (yy + 0.5) * size[1], (xx + 0.5) * size[2]
    centre = np.array([nz * size[0] / 2 + rng.normal(0, 0.1) * radii[0] * (not two_d), node_top + radii[1],
                       nx * size[2] / 2 + rng.uniform(-0.3, 0.3) * radii[2]])
    if two_d:
        centre[0] = z.ravel()[0]  # the frame cuts the node through its middle

    def ellipsoid(c, r):
        return np.sqrt(((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2)

    skin_top = gel + 0.05 * np.sin(x / 2 + rng.uniform(0, 6)) * (gel > 0)
    in_gel, in_skin = y < skin_top, (y >= skin_top) & (y < skin_top + skin)
    depth = np.clip(y - skin_top, 0, None)
    r_node = ellipsoid(centre, radii) / (1 + 0.05 * np.sin(3 * np.arctan2(y - centre[1], x - centre[2])
                                                             + rng.uniform(0, 6)))
    truth = (r_node < 1) if node else np.zeros(shape, bool)
    broadcast = np.zeros(shape)

    # Echo amplitude (linear); the gel and lumina are anechoic.
    tissue_level = 1 + 0.25 * ndi.gaussian_filter(rng.normal(size=shape), (2, 8, 8))
    echo = np.where(in_gel, 0.0, tissue_level) + broadcast
    echo = np.where(in_skin, rng.uniform(2.5, 5.0), echo)
    node_level = 10 ** (rng.uniform(-20, -7) / 20)
    params = dict(seed=seed, two_d=two_d, node=node, diameter_mm=diameter, radii_mm=radii.round(3).tolist(),
                  gel_mm=gel, skin_mm=skin, voxel_size_um=(size * 1000).round(1).tolist(), shape=list(shape),
                  node_db=20 * np.log10(node_level))
    if node:
        if rng.random() < 0.6:
            capsule = (r_node >= 1) & (r_node < 1 + 0.08 / radii.min() + 0.05)
            echo = np.where(capsule, rng.uniform(1.3, 2.2), echo)
        if rng.random() < 0.5:  # posterior acoustic enhancement below the node
            below = (y > centre[1]) & (((x - centre[2]) / radii[2]) ** 2 + ((z - centre[0]) / radii[0]) ** 2 < 1)
            boost = 1 + rng.uniform(0.3, 0.8) * np.exp(-(y - centre[1] - radii[1]).clip(0) / (2 * diameter))
            echo = np.where(below & (r_node >= 1), echo * boost, echo)
            params["enhancement"] = True
        echo = np.where(truth, node_level, echo)
        if rng.random() < 0.5:  # an echogenic hilum, within the cortex
            offset = np.array([0, rng.uniform(-0.15, 0.15) * radii[1], rng.uniform(-0.2, 0.2) * radii[2]])
            hilum = ellipsoid(centre + offset, radii * rng.uniform(0.25, 0.4)) < 1
            echo = np.where(hilum & truth, rng.uniform(0.8, 1.6), echo)
            params["hilum"] = True
    lumina = np.zeros(shape, bool)
    for k in range(rng.integers(0, 3)):  # vessels along the sweep, beside the node
        side = rng.choice([-1, 1])
        radius = rng.uniform(0.15, 0.4)
        vx = centre[2] + side * (radii[2] + radius + rng.uniform(0.4, 1.2))
        vy = centre[1] + rng.uniform(-0.5, 0.5) * radii[1]
        lumina |= ((y - vy) ** 2 + (x - vx - 0.1 * (z - centre[0])) ** 2) < radius ** 2
    cyst = np.zeros(shape, bool)
    if rng.random() < 0.4:  # an anechoic cyst, away from the node
        radius = rng.uniform(0.3, 0.6) * diameter / 2 + 0.2
        cx = centre[2] + rng.choice([-1, 1]) * (radii[2] + radius + 0.5)
        if radius < cx < lateral_mm - radius:
            cyst = ellipsoid((centre[0], max(centre[1], gel + skin + radius + 0.3), cx), (radius,) * 3) < 1
            params["cyst"] = True
    echo = np.where(lumina | cyst, 0.0, echo)
    params["vessels"] = int(lumina.any())

    # Speckle: a complex Gaussian field blurred by the point-spread function (voxels).
    psf = np.array([rng.uniform(0.5, 1.2) if not two_d else 0, rng.uniform(0.6, 1.8), rng.uniform(0.8, 2.6)])
    field = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    field = ndi.gaussian_filter(field.real, psf) + 1j * ndi.gaussian_filter(field.imag, psf)
    field /= np.sqrt(np.mean(np.abs(field) ** 2))
    # Time-gain compensation that does not quite match the attenuation.
    tgc = 10 ** (rng.uniform(-0.5, 0.5) * depth / 20)
    envelope = np.abs(field * echo * tgc + rng.uniform(1e-4, 1e-3) * (rng.normal(size=shape)
                                                                      + 1j * rng.normal(size=shape)))
    gain_db = rng.uniform(-6, 6)
    # Set up as a sonographer would: the node's internal echoes at least 12 dB above the floor.
    dynamic_range = max(rng.uniform(40, 65), 12 + 12 - gain_db - 20 * np.log10(node_level))
    # Tissue speckle sits 6-18 dB below the top of the display; skin and capsule may saturate.
    db = 20 * np.log10(np.maximum(envelope, 1e-12)) - 12 + gain_db
    us = np.clip((db + dynamic_range) / dynamic_range * 255, 0, 255).round().astype(np.uint8)
    params.update(psf_voxels=psf.round(2).tolist(), dynamic_range_db=dynamic_range, gain_db=gain_db)

    # PA: fluence per wavelength and depth times haemoglobin absorption, plus melanin in the skin.
    optics = dict(blood_fraction=rng.uniform(0.005, 0.03), so2=rng.uniform(0.6, 0.85),
                  water_fraction=rng.uniform(0.5, 0.75), scatter_a_cm=rng.uniform(10, 25),
                  scatter_b=rng.uniform(0.9, 1.6))
    mu_eff = _tissue_mu_eff(wavelengths, **optics)
    energy = np.ones(len(wavelengths)) if energy is None else np.asarray(energy, float)
    hbt = np.where(in_gel, 0.0, rng.uniform(0.15, 0.4)) + broadcast
    so2 = np.where(in_gel, 0.0, optics["so2"]) + broadcast
    node_so2 = rng.uniform(0.55, 0.9)
    hbt = np.where(truth, rng.uniform(0.8, 1.6), hbt)
    so2 = np.where(truth, node_so2, so2)
    hbt = np.where(cyst, 0.0, hbt)
    hbt = np.where(lumina, 3.0, hbt)
    so2 = np.where(lumina, rng.choice([0.65, 0.95]), so2)
    melanin = rng.uniform(0.5, 3.0)
    spectra = haemoglobin_extinction(wavelengths) / 1000
    channels = [us.astype(np.float32)]
    blur = (0.6 if not two_d else 0, 1.0, 1.0)
    for (e_hbo2, e_hb), nm, mu, e in zip(spectra, wavelengths, mu_eff, energy):
        fluence = e * np.exp(-mu * depth / 10)  # depth in mm, mu in 1/cm
        absorption = hbt * (so2 * e_hbo2 + (1 - so2) * e_hb) + np.where(in_skin, melanin * (750 / nm) ** 3.5, 0)
        pa = ndi.gaussian_filter(fluence * absorption, blur)
        channels.append((pa + rng.normal(0, 0.01, shape)).astype(np.float32))
    params.update(optics=optics, mu_eff_cm=mu_eff.round(3).tolist(), node_so2=node_so2)
    names = ["US"] + [f"PA{w}" for w in wavelengths]
    return FamilyVolume(np.stack(channels), names, truth, np.where(truth, so2, np.nan),
                        tuple(float(v) for v in size * 1000), params)
