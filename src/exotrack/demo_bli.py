"""Synthetic IVIS acquisitions with known source fluxes.

A mouse is a bright ellipse on a dark stage in the photograph; its tumour and lymph node are
sources of known total flux (p/s) whose radiance is a Gaussian core plus a wider halo from
scattering in tissue. Raw counts follow the calibration model backwards,
``I = bias + L · t · b² / C``, with Poisson photon noise, a read-bias frame and read noise, and
the camera's 16-bit ceiling. The folder is written as Living Image writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

SENSOR_PX = 1024  # unbinned pixels across the field of view
BIAS_COUNTS = 600.0
READ_NOISE = 6.0
FOVS_CM = (12.8, 22.8)
F_NUMBERS = (1, 2, 4, 8)
BODY_RADIANCE = 800.0  # autoluminescence of the body, p/s/cm²/sr


def c_ccd(fov_cm: float, f_number: float) -> float:
    """The demo camera's coefficient: fewer photons per pixel at a smaller aperture (∝ f²) and
    more at a larger field of view (∝ 1/FOV²)."""
    return 2.0e5 * f_number ** 2 * (12.8 / fov_cm) ** 2


@dataclass
class Mouse:
    subject: str
    tumor_flux: float
    lymph_node_flux: float
    xc_cm: float | None = None  # body centre; None: centred
    rois: dict = field(default_factory=dict)  # name -> (yc_cm, xc_cm)


def _source(yy, xx, yc, xc, flux, sigma_cm):
    """Radiance of a source of total flux ``flux``: a Gaussian core and a halo twice as wide
    holding a fifth of the flux; ``4π ∫ L dA = flux``."""
    radiance = np.zeros_like(yy)
    for weight, sigma in ((0.8, sigma_cm), (0.2, 2 * sigma_cm)):
        radiance += weight * flux / (4 * np.pi * 2 * np.pi * sigma ** 2) * np.exp(
            -((yy - yc) ** 2 + (xx - xc) ** 2) / (2 * sigma ** 2))
    return radiance


def simulate_acquisition(folder, mice: list[Mouse], *, exposure_s: float = 60.0, binning: int = 4,
                         f_number: float = 1, fov_cm: float = 12.8, labels: dict | None = None,
                         roi_source: str = "auto", seed: int = 0) -> pd.DataFrame:
    """Write an IVIS acquisition folder and return the truth: per mouse and ROI, the source's
    total flux and where it is (luminescent pixels).

    ``roi_source``: ``"auto"`` (no ROIs stored), ``"csv"`` (``rois.csv``) or ``"living_image"``
    (ROI lines in ``AnalyzedClickInfo.txt``, in cm-per-pixel units of the unbinned sensor).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width = SENSOR_PX // binning
    pixel_cm = fov_cm / width
    centres = (np.arange(width) + 0.5) * pixel_cm
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    radiance = np.zeros_like(yy)
    body = np.zeros(yy.shape, bool)
    truth = []
    spacing = fov_cm / (len(mice) + 1)
    for index, mouse in enumerate(mice):
        xc = mouse.xc_cm if mouse.xc_cm is not None else spacing * (index + 1)
        yc = fov_cm / 2
        shape = ((yy - yc) / 3.6) ** 2 + ((xx - xc) / 1.25) ** 2 < 1  # body, 7.2 x 2.5 cm
        head = ((yy - (yc - 4.3)) / 1.0) ** 2 + ((xx - xc) / 0.9) ** 2 < 1
        body |= shape | head
        sources = {"tumor": (yc + 1.6, xc + 0.5, mouse.tumor_flux, 0.25),
                   "lymph_node": (yc - 2.2, xc - 0.6, mouse.lymph_node_flux, 0.15)}
        for name, (sy, sx, flux, sigma) in sources.items():
            radiance += _source(yy, xx, sy, sx, flux, sigma)
            radius = 1.2 if name == "tumor" else 0.8
            truth.append({"subject": mouse.subject, "roi": name, "total_flux_p_s": flux, "yc": sy / pixel_cm - 0.5,
                          "xc": sx / pixel_cm - 0.5, "radius": radius / pixel_cm})
    radiance += np.where(body, BODY_RADIANCE, 0.0)
    coefficient = c_ccd(fov_cm, f_number)
    expected = radiance * exposure_s * binning ** 2 / coefficient
    bias_frame = BIAS_COUNTS + rng.normal(0, 2.0, yy.shape)  # fixed pattern
    counts = bias_frame + rng.poisson(expected) + rng.normal(0, READ_NOISE, yy.shape)
    counts = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    readbias = np.clip(np.round(bias_frame + rng.normal(0, READ_NOISE, yy.shape)), 0, 65535).astype(np.uint16)
    tifffile.imwrite(folder / "luminescent.TIF", counts)
    tifffile.imwrite(folder / "readbiasonly.TIF", readbias)
    tifffile.imwrite(folder / "photograph.TIF", _photograph(rng, body, SENSOR_PX // 2))
    truth = pd.DataFrame(truth)
    text = _click_info(exposure_s=exposure_s, binning=binning, f_number=f_number, fov_cm=fov_cm,
                       labels=labels or {})
    (folder / "ClickInfo.txt").write_text(text)
    analysed = text
    if roi_source == "living_image":
        sensor_cm = fov_cm / SENSOR_PX
        lines = ["*** ROIs:"]
        for k, row in enumerate(truth.itertuples(), start=1):
            scale = pixel_cm / sensor_cm  # luminescent pixels -> unbinned sensor pixels
            lines.append(
                f"ROI {k}:zColorIndex=1;ROI Type=Measurement;Shape=Circle;Xc={(row.xc + 0.5) * scale:.6f};"
                f"Yc={(row.yc + 0.5) * scale:.6f};Width={2 * row.radius * scale:.6f};"
                f"Height={2 * row.radius * scale:.6f};Angle=0.0000;Label={row.roi};"
                f"cm per pixel={sensor_cm:.12f};ROIColor=16711680;")
        analysed = text + "\n".join(lines) + "\n"
    elif roi_source == "csv":
        pd.DataFrame({"roi": truth["roi"], "subject": truth["subject"], "shape": "circle", "yc": truth["yc"],
                      "xc": truth["xc"], "height": 2 * truth["radius"], "width": 2 * truth["radius"]}).to_csv(
            folder / "rois.csv", index=False)
    (folder / "AnalyzedClickInfo.txt").write_text(analysed)
    truth["saturated"] = bool((counts == 65535).any())
    return truth


def _photograph(rng, body: np.ndarray, side: int) -> np.ndarray:
    from skimage.transform import resize

    mask = resize(body.astype(float), (side, side), order=1) > 0.5
    photo = np.where(mask, 2400.0, 350.0) * (1 + 0.05 * rng.normal(size=mask.shape))
    return np.clip(photo, 0, 65535).astype(np.uint16)


def _click_info(*, exposure_s, binning, f_number, fov_cm, labels) -> str:
    lines = [
        "*** ClickNumber:\tEXO20261121_001",
        "ClickNumber:\tEXO20261121_001",
        "*** Luminescent Image",
        "Acquisition Seconds:\t1795430000",
        f"Binning Factor:\t{binning}",
        f"Luminescent Exposure (Seconds):\t{exposure_s:.3f}",
        f"f Number:\t{f_number:g}",
        f"Field of View:\t{fov_cm:g}",
        "luminescent image:\tluminescent.TIF",
        "*** Photographic Image",
        "Binning Factor:\t2",
        "Photo Exposure (Seconds):\t0.200",
        "f Number:\t8",
        f"Field of View:\t{fov_cm:g}",
        "photograph image:\tphotograph.TIF",
        "*** readbiasonly",
        f"Binning Factor:\t{binning}",
        "readbiasonly image:\treadbiasonly.TIF",
        "*** Camera System Info",
        "Camera ID:\texotrack demo camera",
        "Camera Saturation Counts:\t65535",
    ]
    for fov in FOVS_CM:
        for f in F_NUMBERS:
            lines.append(f"Coef C-ccd at FOV {fov:g}, f{f}:\t{c_ccd(fov, f):.6e}")
    lines.append("*** User Label Name Set:\tLiving Image Universal")
    lines += [f"{key}:\t{value}" for key, value in {"User": "exotrack demo", "Experiment": "4T1 exosome education",
                                                   "View": "ventral", **labels}.items()]
    return "\n".join(lines) + "\n"


# Demo cohort: tumour flux grows ~4x a week in both groups; lymph-node metastasis follows only in
# exosome-educated mice (the seed study's result).
_DAYS = (7, 14, 21)


def _fluxes(group: str, day: int, rng) -> tuple[float, float]:
    tumor = 2e6 * np.exp(0.2 * (day - 7)) * rng.uniform(0.7, 1.4)
    node = (3e4 if group == "PBS" else 3e5) * np.exp((0.05 if group == "PBS" else 0.2) * (day - 7)) * rng.uniform(
        0.7, 1.4)
    return float(tumor), float(node)


def write_demo_acquisitions(directory, *, seed: int = 0) -> list[dict]:
    """The demo cohort's IVIS acquisitions (mice m1-m3 PBS, m4-m6 exosome; days 7, 14, 21), with
    truth under ``truth/<sample>/rois.csv``; returns the sample-sheet rows.

    Settings vary across acquisitions (exposure, binning, f-number, ROIs from Living Image, from
    ``rois.csv`` or automatic); on day 21 mouse m2 is imaged twice with different settings, m1 once
    more with an exposure that saturates the camera, and m4-m6 together in one acquisition.
    """
    directory = Path(directory)
    rows = []
    settings = [dict(exposure_s=60, binning=4, f_number=1), dict(exposure_s=30, binning=8, f_number=2),
                dict(exposure_s=120, binning=4, f_number=2), dict(exposure_s=10, binning=2, f_number=1)]
    sources = ["auto", "living_image", "csv"]
    index = 0
    for group, mice in (("PBS", ["m1", "m2", "m3"]), ("exosome", ["m4", "m5", "m6"])):
        for m, mouse in enumerate(mice):
            for d, day in enumerate(_DAYS):
                rng = np.random.default_rng(seed * 1000 + 700 + 10 * (3 * (group == "exosome") + m) + d)
                tumor, node = _fluxes(group, day, rng)
                acquisitions = [(f"{mouse}_d{day}", settings[index % len(settings)])]
                if mouse == "m2" and day == 21:
                    acquisitions.append((f"{mouse}_d{day}_b8", dict(exposure_s=5, binning=8, f_number=4)))
                if mouse == "m1" and day == 21:
                    acquisitions.append((f"{mouse}_d{day}_long", dict(exposure_s=300, binning=8, f_number=1)))
                if group == "exosome" and day == 21:
                    continue  # imaged together below
                for sample, setting in acquisitions:
                    truth = simulate_acquisition(
                        directory / "ivis" / sample, [Mouse(mouse, tumor, node)], roi_source=sources[index % 3],
                        labels={"Animal Number": mouse[1:], "Time Point": f"day {day}"}, seed=seed * 1000 + 700 + index,
                        **setting)
                    _truth(directory, sample, truth)
                    rows.append({"sample": sample, "modality": "bli", "group": group, "subject": mouse,
                                 "timepoint": day, "marker": "luciferase", "channels": "",
                                 "path": f"ivis/{sample}"})
                    index += 1
    together = []
    for m, mouse in enumerate(["m4", "m5", "m6"]):
        rng = np.random.default_rng(seed * 1000 + 700 + 10 * (3 + m) + 2)
        together.append(Mouse(mouse, *_fluxes("exosome", 21, rng)))
    sample = "m4-m6_d21"
    truth = simulate_acquisition(directory / "ivis" / sample, together, fov_cm=22.8, binning=4, exposure_s=10,
                                 labels={"Animal Number": "4,5,6", "Time Point": "day 21"}, seed=seed * 1000 + 799)
    _truth(directory, sample, truth)
    rows.append({"sample": sample, "modality": "bli", "group": "exosome", "subject": "m4;m5;m6", "timepoint": 21,
                 "marker": "luciferase", "channels": "", "path": f"ivis/{sample}"})
    return rows


def _truth(directory, sample, truth):
    folder = Path(directory) / "truth" / sample
    folder.mkdir(parents=True, exist_ok=True)
    truth.to_csv(folder / "rois.csv", index=False)
