"""Synthetic IVIS acquisitions with known source fluxes.

A mouse is a bright ellipse on a dark stage in the photograph; its tumour and lymph node are
sources of known total flux (p/s) whose radiance is a Gaussian core plus a wider halo from
scattering in tissue, on the body's own autoluminescence. The camera is modelled, not the
reader's formula inverted: photons leave each cm² of the stage into the lens's solid angle
(set by the f-number and the distance that gives the field of view), pass its optics, fall off
towards the corners (cos⁴ of the field angle, on the real-folder camera), become electrons with
the CCD's quantum efficiency (Poisson), binned pixels sum their electrons and dark charge, and the
read-out adds read noise and the bias pattern before dividing by the gain. The C-ccd lines the
folder carries are what a calibration of this camera measures (radiance per count per second per
unbinned pixel, flat field apart).

Two layouts: ``"legacy"`` (``readbiasonly.TIF``, no dark charge, the project's first folders)
and ``"living_image"``, a folder as Living Image 4.7 writes it on an IVIS Spectrum: ``readbias.TIF``
with a data multiplier, a ``Read Bias Level``, a dark-charge ``background.TIF`` (big-endian) with
its own block, Living Image's corrected radiance ``luminescentFloatCorrected.TIF`` (bias, dark
charge and flat field removed) and, for stored ROIs, unlabelled circles and a rotated ellipse per
mouse in the 1920-pixel frame of ``cm per pixel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

FOVS_CM = (12.8, 22.8)
F_NUMBERS = (1, 2, 4, 8)
BODY_RADIANCE = 800.0  # autoluminescence of the body, p/s/cm²/sr
LIVING_IMAGE_VERSION = "4.7.3.20616"


@dataclass(frozen=True)
class Camera:
    """A cooled CCD behind a lens of fixed focal length; the field of view is set by the stage's
    distance. Optics and sensor as published for the instrument; ``gain_e`` (electrons per
    count) is the one free parameter."""

    sensor_px: int  # unbinned pixels across the field of view
    gain_e: float
    pixel_um: float = 13.5
    focal_cm: float = 5.0
    transmission: float = 0.9
    qe: float = 0.85  # back-thinned CCD near luciferase's 560 nm
    read_noise_e: float = 4.0
    bias_counts: float = 600.0
    dark_e_s: float = 0.0  # dark charge per unbinned pixel per second
    vignetting: bool = False
    fovs_cm: tuple = FOVS_CM
    f_numbers: tuple = F_NUMBERS

    def magnification(self, fov_cm: float) -> float:
        return self.sensor_px * self.pixel_um * 1e-4 / fov_cm

    def electrons_per_radiance(self, fov_cm: float, f_number: float) -> float:
        """Electrons per second in one unbinned pixel per p/s/cm²/sr on the stage, on axis."""
        m = self.magnification(fov_cm)
        distance = self.focal_cm * (1 + 1 / m)  # thin lens: stage to lens
        solid_angle = np.pi * (self.focal_cm / f_number / 2) ** 2 / distance ** 2
        stage_cm2 = (fov_cm / self.sensor_px) ** 2
        return stage_cm2 * solid_angle * self.transmission * self.qe

    def calibration(self, fov_cm: float, f_number: float) -> float:
        """The C-ccd coefficient a calibration of this camera finds on axis."""
        return self.gain_e / self.electrons_per_radiance(fov_cm, f_number)

    def relative_illumination(self, yy_cm, xx_cm, fov_cm: float):
        """cos⁴ of the field angle (1 without vignetting), positions from the image's corner."""
        if not self.vignetting:
            return np.ones_like(yy_cm)
        m = self.magnification(fov_cm)
        radius_cm = np.hypot(yy_cm - fov_cm / 2, xx_cm - fov_cm / 2) * m  # on the sensor
        return np.cos(np.arctan(radius_cm / (self.focal_cm * (1 + m)))) ** 4


# The project's demo camera (first folders) and an IVIS Spectrum as Living Image 4.7 describes it:
# its gain gives the documented C-ccd at FOV 22.4, f/1 (7.223e5).
DEMO_CAMERA = Camera(sensor_px=1024, gain_e=0.18, read_noise_e=1.1)
IVIS_SPECTRUM = Camera(sensor_px=1920, gain_e=0.6375, read_noise_e=4.5, bias_counts=496.628, dark_e_s=0.002,
                       vignetting=True, fovs_cm=(3.9, 6.6, 13.2, 22.4), f_numbers=(1, 2, 4, 8, 16))
SENSOR_PX = DEMO_CAMERA.sensor_px


def c_ccd(fov_cm: float, f_number: float, camera: Camera = DEMO_CAMERA) -> float:
    """The C-ccd coefficient the camera's calibration gives."""
    return camera.calibration(fov_cm, f_number)


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


def _inside(yy, xx, yc, xc, height, width, angle_deg):
    """Pixels (centres ``yy, xx`` in cm) inside an ellipse whose width axis is turned
    ``angle_deg`` from x towards +y."""
    t = np.deg2rad(angle_deg)
    u = (xx - xc) * np.cos(t) + (yy - yc) * np.sin(t)
    v = -(xx - xc) * np.sin(t) + (yy - yc) * np.cos(t)
    return (u / (width / 2)) ** 2 + (v / (height / 2)) ** 2 <= 1


def simulate_acquisition(folder, mice: list[Mouse], *, exposure_s: float = 60.0, binning: int = 4,
                         f_number: float = 1, fov_cm: float = 12.8, labels: dict | None = None,
                         roi_source: str = "auto", seed: int = 0, layout: str = "legacy",
                         body_radiance: float = BODY_RADIANCE) -> pd.DataFrame:
    """Write an IVIS acquisition folder and return the truth: per mouse and ROI, the source's
    total flux and where it is (luminescent pixels); for stored ROIs also ``label`` and
    ``li_total_flux_p_s``, the total flux Living Image prints for that ROI (``4π A Σ`` of its
    corrected radiance over the pixels whose centre lies inside), ``roi_flux_p_s`` the noise-free
    flux there (sources and autoluminescence) and ``source_flux_in_roi_p_s`` the sources' alone.

    ``roi_source``: ``"auto"`` (no ROIs stored), ``"csv"`` (``rois.csv``) or ``"living_image"``
    (ROI lines in ``AnalyzedClickInfo.txt``: legacy, labelled ``tumor``/``lymph_node`` in
    cm-per-pixel units of the unbinned sensor; ``layout="living_image"``, unlabelled ``ROI n`` in
    the 1920-pixel frame, the node's an ellipse turned 30°). ``layout``: see the module.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    real = layout == "living_image"
    camera = IVIS_SPECTRUM if real else DEMO_CAMERA
    rng = np.random.default_rng(seed)
    width = camera.sensor_px // binning
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
                          "xc": sx / pixel_cm - 0.5, "radius": radius / pixel_cm, "yc_cm": sy, "xc_cm": sx})
    sources_only = radiance.copy()
    radiance += np.where(body, body_radiance, 0.0)
    counts, float_image, bias_level = _expose(folder, camera, radiance, yy, xx, exposure_s=exposure_s,
                                              binning=binning, f_number=f_number, fov_cm=fov_cm, rng=rng, real=real)
    tifffile.imwrite(folder / "photograph.TIF", _photograph(rng, body, camera.sensor_px // 2))
    truth = pd.DataFrame(truth)
    text = _click_info(camera, exposure_s=exposure_s, binning=binning, f_number=f_number, fov_cm=fov_cm,
                       labels=labels or {}, real=real, bias_level=bias_level)
    (folder / "ClickInfo.txt").write_text(text)
    analysed = text
    if roi_source == "living_image":
        sensor_cm = fov_cm / camera.sensor_px
        lines = ["*** ROIs:"]
        n = len(truth)
        for k, row in enumerate(truth.itertuples(), start=1):
            # Real folders: one unlabelled ROI per source, named in order, the node's an ellipse
            # turned 30° (tumours first, as Living Image numbers them when drawn mouse by mouse).
            order = (k - 1) // 2 + 1 + (n // 2 if row.roi == "lymph_node" else 0) if real else k
            label = f"ROI {order}" if real else row.roi
            radius_cm = row.radius * pixel_cm
            height, width_cm, angle = ((2 * radius_cm, 2 * radius_cm, 0.0) if row.roi == "tumor" or not real
                                       else (1.4 * radius_cm, 2.4 * radius_cm, 30.0))
            subject = "Subject ROI=_none_;Subject ID=;Subject Label=;Bkg ROI=_none_;" if real else ""
            lines.append(
                f"ROI {order}:\tzColorIndex=1;ROI Type=Measurement;{subject}Shape="
                f"{'Ellipse' if angle else 'Circle'};Xc={row.xc_cm / sensor_cm:.6f};Yc={row.yc_cm / sensor_cm:.6f};"
                f"Width={width_cm / sensor_cm:.6f};Height={height / sensor_cm:.6f};Angle={angle:.4f};"
                f"Label={label};cm per pixel={sensor_cm:.12f};ROIColor=16711680;")
            inside = _inside(yy, xx, row.yc_cm, row.xc_cm, height, width_cm, angle)
            truth.loc[k - 1, "label"] = label
            if float_image is not None:
                truth.loc[k - 1, "li_total_flux_p_s"] = 4 * np.pi * pixel_cm ** 2 * float_image[inside].sum()
            truth.loc[k - 1, "roi_flux_p_s"] = 4 * np.pi * pixel_cm ** 2 * radiance[inside].sum()
            truth.loc[k - 1, "source_flux_in_roi_p_s"] = 4 * np.pi * pixel_cm ** 2 * sources_only[inside].sum()
        analysed = text + "\n".join(lines) + "\n"
    elif roi_source == "csv":
        pd.DataFrame({"roi": truth["roi"], "subject": truth["subject"], "shape": "circle", "yc": truth["yc"],
                      "xc": truth["xc"], "height": 2 * truth["radius"], "width": 2 * truth["radius"]}).to_csv(
            folder / "rois.csv", index=False)
    (folder / "AnalyzedClickInfo.txt").write_text(analysed)
    truth["saturated"] = bool((counts == 65535).any())
    return truth.drop(columns=["yc_cm", "xc_cm"])


def _expose(folder, camera: Camera, radiance, yy, xx, *, exposure_s, binning, f_number, fov_cm, rng, real):
    """Raw counts of one exposure through ``camera``, and the image files beside them; returns
    the counts, Living Image's corrected radiance (the real layout) and the bias level."""
    shape = radiance.shape
    illumination = camera.relative_illumination(yy, xx, fov_cm)
    photons_e = radiance * camera.electrons_per_radiance(fov_cm, f_number) * illumination * exposure_s * binning ** 2
    # Amplifier glow: dark charge rises towards one edge of the chip, with a few hot pixels.
    dark_rate = camera.dark_e_s * binning ** 2 * (1 + 2 * xx / fov_cm)
    hot = rng.random(shape) < 0.002
    dark_rate = np.where(hot, dark_rate * 50, dark_rate)
    pattern = rng.normal(0, 1.5, shape[1])[None, :] + rng.normal(0, 0.5, shape)  # column and pixel bias pattern
    level = camera.bias_counts
    electrons = rng.poisson(photons_e) + rng.poisson(dark_rate * exposure_s)
    counts = level + pattern + (electrons + rng.normal(0, camera.read_noise_e, shape)) / camera.gain_e
    counts = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    tifffile.imwrite(folder / "luminescent.TIF", counts)
    read_counts = camera.read_noise_e / camera.gain_e
    if not real:
        readbias = np.clip(np.round(level + pattern + rng.normal(0, read_counts, shape)), 0, 65535)
        tifffile.imwrite(folder / "readbiasonly.TIF", readbias.astype(np.uint16))
        return counts, None, level
    multiplier, frames = 10, 16  # Living Image stores frame averages x10
    readbias = multiplier * (level + pattern + rng.normal(0, read_counts / np.sqrt(frames), shape))
    tifffile.imwrite(folder / "readbias.TIF", np.round(readbias).astype(np.uint16))
    dark_level, dark_exposure = level - 0.425, 40.0  # the bias drifts between exposures
    dark = dark_level + pattern + dark_rate * dark_exposure / camera.gain_e
    dark_frame = multiplier * (dark + rng.normal(0, read_counts / np.sqrt(frames), shape))
    tifffile.imwrite(folder / "background.TIF", np.round(dark_frame).astype(">u2"), byteorder=">")
    # Living Image's own processing: the frames' noise-free bias and dark charge out, the lens's
    # fall-off divided out, then its calibration.
    signal = counts - level - pattern - dark_rate * exposure_s / camera.gain_e
    corrected = signal * camera.calibration(fov_cm, f_number) / exposure_s / binning ** 2 / illumination
    tifffile.imwrite(folder / "luminescentFloatCorrected.TIF", corrected.astype(np.float32))
    return counts, corrected.astype(np.float32).astype(np.float64), level


def _photograph(rng, body: np.ndarray, side: int) -> np.ndarray:
    from skimage.transform import resize

    mask = resize(body.astype(float), (side, side), order=1) > 0.5
    photo = np.where(mask, 2400.0, 350.0) * (1 + 0.05 * rng.normal(size=mask.shape))
    return np.clip(photo, 0, 65535).astype(np.uint16)


def _click_info(camera: Camera, *, exposure_s, binning, f_number, fov_cm, labels, real, bias_level) -> str:
    lines = [
        "*** ClickNumber:\tEXO20261121_001",
        "ClickNumber:\tEXO20261121_001",
    ]
    if real:
        lines += [f"Living Image Version:\t{LIVING_IMAGE_VERSION}",
                  "*** luminescent image:\tluminescent.TIF",
                  f"Read Bias Level:\t{bias_level:.3f}",
                  "Background Corrected:\t0", "Flat Field Corrected:\t0", "Cosmic Corrected:\t0"]
    else:
        lines += ["*** Luminescent Image", "luminescent image:\tluminescent.TIF"]
    lines += [
        "Acquisition Seconds:\t1795430000",
        f"Binning Factor:\t{binning}",
        f"Luminescent Exposure (Seconds):\t{exposure_s:.3f}",
        f"f Number:\t{f_number:g}",
        f"Field of View:\t{fov_cm:g}",
        "*** photograph image:\tphotograph.TIF" if real else "*** Photographic Image",
        "Binning Factor:\t2",
        "Photo Exposure (Seconds):\t0.200",
        "f Number:\t8",
        f"Field of View:\t{fov_cm:g}",
    ]
    if real:
        lines += ["*** readbiasonly image:\treadbiasonly.TIF", f"Binning Factor:\t{binning}",
                  "*** readbias image:\treadbias.TIF", f"Binning Factor:\t{binning}", "Data Multiplier:\t10",
                  "*** darkcharge image:\tbackground.TIF", "Data Multiplier:\t10",
                  f"Read Bias Level:\t{bias_level - 0.425:.3f}", "Background Exposure (Seconds):\t40",
                  f"Binning Factor:\t{binning}"]
    else:
        lines += ["photograph image:\tphotograph.TIF", "*** readbiasonly", f"Binning Factor:\t{binning}",
                  "readbiasonly image:\treadbiasonly.TIF"]
    lines += ["*** Camera System Info", "Camera ID:\t" + ("IVIS Spectrum" if real else "exotrack demo camera"),
              "Camera Saturation Counts:\t65535"]
    for fov in camera.fovs_cm:
        for f in camera.f_numbers:
            lines.append(f"Coef C-ccd at FOV {fov:g}, f{f}:\t{camera.calibration(fov, f):.3E}")
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
    more with an exposure that saturates the camera, and m4-m6 together in one acquisition. The
    acquisitions with Living Image's ROIs, and m4-m6's, are laid out as Living Image 4.7 writes
    them (see :func:`simulate_acquisition`); a ``rois.csv`` of ``label, roi`` names their ROIs.
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
                    source = sources[index % 3]
                    real = dict(layout="living_image", fov_cm=13.2) if source == "living_image" else {}
                    truth = simulate_acquisition(
                        directory / "ivis" / sample, [Mouse(mouse, tumor, node)], roi_source=source,
                        labels={"Animal Number": mouse[1:], "Time Point": f"day {day}"}, seed=seed * 1000 + 700 + index,
                        **setting, **real)
                    if real:
                        truth[["label", "roi"]].to_csv(directory / "ivis" / sample / "rois.csv", index=False)
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
    truth = simulate_acquisition(directory / "ivis" / sample, together, fov_cm=22.4, binning=4, exposure_s=10,
                                 labels={"Animal Number": "4,5,6", "Time Point": "day 21"}, seed=seed * 1000 + 799,
                                 layout="living_image")
    _truth(directory, sample, truth)
    rows.append({"sample": sample, "modality": "bli", "group": "exosome", "subject": "m4;m5;m6", "timepoint": 21,
                 "marker": "luciferase", "channels": "", "path": f"ivis/{sample}"})
    return rows


def _truth(directory, sample, truth):
    folder = Path(directory) / "truth" / sample
    folder.mkdir(parents=True, exist_ok=True)
    truth.to_csv(folder / "rois.csv", index=False)
