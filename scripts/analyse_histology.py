"""Snakemake entry point: one histology section."""
import logging

from exotrack.histology import process_sample

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
process_sample(
    sample=snakemake.wildcards.sample,
    path=snakemake.params.path,
    options=snakemake.params.options,
    marker=snakemake.params.marker,
    channels=snakemake.params.channels,
    pixel_size_um=snakemake.params.pixel_size_um,
    outputs=dict(snakemake.output.items()),
)
