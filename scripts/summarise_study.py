"""Snakemake entry point: results/tables/samples.csv (and .parquet), subjects.csv, groups.csv and
results/plots/{modality}.png and .svg."""
import logging

from exotrack.aggregate import write_study

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params = snakemake.params
write_study(snakemake.input.sheet, params.schema, snakemake.input.metrics, dict(snakemake.output.items()),
            decisions=snakemake.input.decisions[0] if snakemake.input.decisions else None,
            modalities=params.modalities, control=params.control, statistics=params.statistics,
            marker_ratio=params.marker_ratio)
