"""Snakemake entry point: one fluorescence sample (a still or a time-lapse)."""
import logging

from exotrack.fluorescence import process_sample

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
process_sample(
    sample=snakemake.wildcards.sample,
    path=snakemake.params.path,
    options=snakemake.params.options,
    channels=snakemake.params.channels,
    pixel_size_um=snakemake.params.pixel_size_um,
    axes=snakemake.params.axes,
    outputs=dict(snakemake.output.items()),
)
