"""Snakemake entry point: one IVIS acquisition."""
import logging

from exotrack.bli import process_sample

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
process_sample(
    sample=snakemake.wildcards.sample,
    path=snakemake.params.path,
    options=snakemake.params.options,
    subject=snakemake.params.subject,
    outputs=dict(snakemake.output.items()),
)
