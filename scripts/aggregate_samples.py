"""Snakemake entry point: results/tables/samples.csv and .parquet."""
import logging

from exotrack import io
from exotrack.aggregate import read_metrics, sample_table
from exotrack.sheet import load_sample_sheet
from exotrack.viewer import read_decisions

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
sheet = load_sample_sheet(snakemake.input.sheet, snakemake.params.schema, check_paths=False)
decisions = read_decisions(snakemake.input.decisions[0]) if snakemake.input.decisions else None
table = sample_table(sheet, read_metrics(snakemake.input.metrics), decisions)
io.write_table(table, snakemake.output.csv)
io.write_parquet(table, snakemake.output.parquet)
