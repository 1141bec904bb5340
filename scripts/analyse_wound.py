"""Snakemake entry point: one scratch-assay well."""
import logging

from exotrack.wound import process_sample

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
process_sample(sample=snakemake.wildcards.sample, path=snakemake.params.path, options=snakemake.params.options,
               pixel_size_um=snakemake.params.pixel_size_um, outputs=dict(snakemake.output.items()))
