"""exotrack: exosome-tracking image analysis, a Snakemake workflow on a tested Python library."""

from importlib import metadata

try:
    __version__ = metadata.version("exotrack")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
