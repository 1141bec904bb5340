"""Snakemake entry point: results/tables/timecourse.csv."""
import logging

from exotrack import io
from exotrack.aggregate import bli_rois
from exotrack.bli import timecourse
from exotrack.sheet import load_sample_sheet

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
sheet = load_sample_sheet(snakemake.input.sheet, snakemake.params.schema, check_paths=False)
rois = bli_rois(sheet, dict(zip(snakemake.params.samples, snakemake.input.rois)))
io.write_table(timecourse(rois), snakemake.output[0])
