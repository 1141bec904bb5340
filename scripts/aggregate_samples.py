"""Snakemake entry point: results/tables/samples.csv."""
import logging

from exotrack import io
from exotrack.aggregate import read_metrics, sample_table
from exotrack.sheet import load_sample_sheet

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
sheet = load_sample_sheet(snakemake.input.sheet, snakemake.params.schema)
io.write_table(sample_table(sheet, read_metrics(snakemake.input.metrics)), snakemake.output.samples)
