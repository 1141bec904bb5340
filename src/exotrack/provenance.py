"""What produced a set of results: software versions, the effective config and input checksums."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path



def software_versions() -> dict:
    """Python, the platform and every installed distribution (name -> version): any of them
    (imagecodecs, zarr, pydicom, pillow, ...) can decide how an image decodes."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    packages = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            packages.setdefault(name.lower().replace("_", "-"), dist.version)
    versions.update(sorted(packages.items()))
    return versions


def checksum(path) -> str:
    """SHA-256 of a file, or of every file in a folder (by relative path); ``missing`` if absent."""
    path = Path(path)
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
