"""Release hygiene: version, licence, citation, the napari manifest and provenance."""

import subprocess
import sys
from pathlib import Path

import pytest

import exotrack
from exotrack.provenance import software_versions

ROOT = Path(__file__).resolve().parents[1]


def test_version_flag_prints_the_version():
    out = subprocess.run([sys.executable, "-m", "exotrack.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"exotrack {exotrack.__version__}"
    assert exotrack.__version__[0].isdigit()


def test_licence_and_citation_travel_with_the_code():
    import yaml

    licence = (ROOT / "LICENSE").read_text()
    assert "exotrack developers" in licence and "Redistribution and use in source and binary forms" in licence
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] and citation["title"] == "exotrack"
    assert citation["license"] == "BSD-3-Clause"


def test_napari_manifest_validates_and_claims_only_folders(tmp_path):
    npe2 = pytest.importorskip("npe2")
    result = subprocess.run(["npe2", "validate", "exotrack"], capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr
    manifest = npe2.PluginManifest.from_distribution("exotrack")
    assert manifest.name == "exotrack"  # the entry point exotrack:napari.yaml resolves in the package
    assert [r.filename_patterns for r in manifest.contributions.readers] == [[]]
    pm = npe2.PluginManager()
    pm.register(npe2.PluginManifest.from_file(ROOT / "src" / "exotrack" / "napari.yaml"))
    (tmp_path / "image.tif").write_bytes(b"x")
    ours = {"exotrack.get_reader"}
    assert not ours & {r.command for r in pm.iter_compatible_readers(str(tmp_path / "image.tif"))}
    assert ours <= {r.command for r in pm.iter_compatible_readers(str(tmp_path))}


def test_provenance_lists_every_installed_distribution():
    versions = software_versions()
    for name in ("imagecodecs", "zarr", "pydicom", "pillow", "matplotlib", "pyarrow", "numpy", "tifffile"):
        assert versions.get(name), name
    from importlib import metadata

    assert len(versions) >= len({d.metadata["Name"].lower() for d in metadata.distributions()})
