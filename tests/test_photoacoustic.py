"""Photoacoustics against volumes with a known node: unmixing, segmentation, DICOM, bad stacks."""
import numpy as np
import pandas as pd
import pytest
import tifffile

from exotrack import photoacoustic as pa
from exotrack.demo_photoacoustic import simulate_volume
from exotrack.io import write_ome_tiff


def _run(path, tmp_path, name="out", **kwargs):
    outputs = {k: tmp_path / name / f"{k}.{e}" for k, e in
               [("regions", "csv"), ("mask", "tif"), ("metrics", "json"), ("qc", "png")]}
    metrics = pa.process_sample(sample=name, path=path, options={}, outputs=outputs, **kwargs)
    return metrics, outputs


def test_unmixing_recovers_oxygenation_and_does_not_clip():
    so2 = np.array([0.0, 0.3, 0.7, 1.0])
    hbt = np.array([1.0, 2.0, 0.5, 1.5])
    wavelengths = [700, 750, 800, 850]
    spectra = pa.extinction(wavelengths) / 1000
    signal = spectra @ np.stack([hbt * so2, hbt * (1 - so2)])
    found_so2, found_hbt = pa.unmix(signal, wavelengths)
    np.testing.assert_allclose(found_so2, so2, atol=1e-9)
    np.testing.assert_allclose(found_hbt, hbt, rtol=1e-9)
    # A spectrum no mixture of HbO2 and Hb explains: sO2 beyond 1 is NaN, not 1.
    odd = spectra @ np.array([[1.2], [-0.2]])
    assert np.isnan(pa.unmix(odd, wavelengths)[0]).all()
    with pytest.raises(pa.io.InputError, match="1200 nm are not in the haemoglobin spectra table"):
        pa.extinction([750, 1200])


@pytest.mark.parametrize("seed, hypoxic, scale", [(21, False, 0.85), (22, True, 1.0), (23, True, 1.3)])
def test_node_volume_dice_and_oxygenation(tmp_path, seed, hypoxic, scale):
    volume = simulate_volume(radii_mm=(0.9 * scale, 0.7 * scale, 1.2 * scale), hypoxic=hypoxic, seed=seed)
    write_ome_tiff(tmp_path / "v.ome.tif", volume.image, axes="CZYX", channel_names=volume.channel_names,
                   pixel_size_um=volume.voxel_size_um)
    metrics, outputs = _run(tmp_path / "v.ome.tif", tmp_path)
    assert metrics["status"] == "ok"
    mask = tifffile.imread(outputs["mask"]).astype(bool)
    dice = 2 * (mask & volume.node).sum() / (mask.sum() + volume.node.sum())
    assert dice >= 0.85
    assert metrics["ln_volume_mm3"] == pytest.approx(volume.node_volume_mm3, rel=0.10)
    assert abs(metrics["ln_so2_mean"] - volume.node_so2) <= 0.05
    regions = pd.read_csv(outputs["regions"]).set_index("region")
    assert regions.columns[:4].tolist() == ["volume_mm3", "pa_mean", "so2_mean", "hbt_mean"]
    assert (regions.loc["node", "hypoxic_fraction"] > 0.2) == hypoxic
    assert regions.loc["shell", "volume_mm3"] > 0


def test_dicom_ultrasound_geometry_and_segmentation(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    volume = simulate_volume(seed=24)
    us = volume.image[0]
    grey = np.clip(us / us.max() * 255, 0, 255).astype(np.uint8)
    for name, pixels, rgb in (("cine.dcm", grey, False), ("frame_rgb.dcm", np.repeat(grey[14][..., None], 3, -1), True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # ultrasound multi-frame
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.Modality = "US"
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
        ds.SamplesPerPixel = 3 if rgb else 1
        ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
        if rgb:
            ds.PlanarConfiguration = 0
        else:
            ds.NumberOfFrames = pixels.shape[0]
            ds.SpacingBetweenSlices = volume.voxel_size_um[0] / 1000  # mm
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
        region.PhysicalDeltaX = volume.voxel_size_um[2] / 1e4
        region.PhysicalDeltaY = volume.voxel_size_um[1] / 1e4
        ds.SequenceOfUltrasoundRegions = [region]
        ds.PixelData = pixels.tobytes()
        ds.save_as(tmp_path / name, enforce_file_format=True)
    data, size = pa.read_dicom(tmp_path / "cine.dcm")
    assert data.shape == us.shape
    np.testing.assert_allclose(size, volume.voxel_size_um)
    data, size = pa.read_dicom(tmp_path / "frame_rgb.dcm")
    assert data.shape == (1,) + us.shape[1:] and size[1:] == pytest.approx(volume.voxel_size_um[1:])
    metrics, _ = _run(tmp_path / "cine.dcm", tmp_path, "dicom")
    assert metrics["status"] == "ok" and np.isnan(metrics["ln_so2_mean"])  # ultrasound only
    assert metrics["ln_volume_mm3"] == pytest.approx(volume.node_volume_mm3, rel=0.10)
    (tmp_path / "empty.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    metrics, _ = _run(tmp_path / "empty.dcm", tmp_path, "nopixels")
    assert "cannot read empty.dcm as a DICOM image with pixel data" in metrics["status"]


def test_seed_from_the_sheet_picks_the_node_over_a_darker_decoy(tmp_path):
    volume = simulate_volume(seed=25)
    image = volume.image.copy()
    image[0, 4:24, 125:150, 20:50] *= 0.1  # an anechoic cyst, darker than the node
    write_ome_tiff(tmp_path / "v.ome.tif", image, axes="CZYX", channel_names=volume.channel_names,
                   pixel_size_um=volume.voxel_size_um)
    centre = tuple(int(c) for c in np.argwhere(volume.node).mean(axis=0))
    metrics, _ = _run(tmp_path / "v.ome.tif", tmp_path, seed=",".join(map(str, centre)))
    assert metrics["ln_volume_mm3"] == pytest.approx(volume.node_volume_mm3, rel=0.10)


def test_bad_stacks_are_named(tmp_path):
    volume = simulate_volume(shape=(12, 100, 120), radii_mm=(0.6, 0.6, 0.8), depth_mm=2.5, seed=26)
    write_ome_tiff(tmp_path / "nous.ome.tif", volume.image[1:], axes="CZYX", channel_names=["PA750", "PA850"],
                   pixel_size_um=volume.voxel_size_um)
    metrics, _ = _run(tmp_path / "nous.ome.tif", tmp_path, "nous")
    assert "no ultrasound channel: expected one named 'US' among 'PA750', 'PA850'" in metrics["status"]
    write_ome_tiff(tmp_path / "far.ome.tif", volume.image, axes="CZYX", channel_names=["US", "PA750", "PA1300"],
                   pixel_size_um=volume.voxel_size_um)
    metrics, _ = _run(tmp_path / "far.ome.tif", tmp_path, "far")
    assert "1300 nm are not in the haemoglobin spectra table" in metrics["status"]
    tifffile.imwrite(tmp_path / "nosize.tif", volume.image[0], metadata={"axes": "ZYX"})
    metrics, _ = _run(tmp_path / "nosize.tif", tmp_path, "nosize")
    assert "does not state its voxel size" in metrics["status"]
    write_ome_tiff(tmp_path / "us.ome.tif", volume.image[:1], axes="CZYX", channel_names=["US"],
                   pixel_size_um=volume.voxel_size_um)
    metrics, _ = _run(tmp_path / "us.ome.tif", tmp_path, "outside", seed="50,0,0")
    assert "seed (50, 0, 0) lies outside the stack" in metrics["status"]
