"""Snakemake entry point: fluorescence samples (a batch of still fields, or one time-lapse), each
field in a process of its own (exotrack.batch): one field killed for its memory costs that field."""
import logging
from pathlib import Path

from exotrack import fluorescence, qc
from exotrack.batch import run_batch
from exotrack.export import write_track_exports

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params = snakemake.params
outputs = {key: [value] if isinstance(value, str) else list(value) for key, value in snakemake.output.items()}
TABLES = {"cells": fluorescence.CELL_COLUMNS, "puncta": fluorescence.PUNCTA_COLUMNS,
          "tracks": fluorescence.TRACK_COLUMNS, "track_summary": fluorescence.TRACK_SUMMARY_COLUMNS,
          "cell_tracks": fluorescence.CELL_TRACK_COLUMNS}


def field_outputs(i):
    return {key: paths[i] for key, paths in outputs.items()}


def analyse(i):
    metrics = fluorescence.process_sample(
        sample=params.samples[i], path=params.path[i], options=params.options, channels=params.channels[i],
        pixel_size_um=params.pixel_size_um[i], axes=params.axes[i], nuclei_labels=params.labels[i][0] or None,
        cell_labels=params.labels[i][1] or None, outputs=field_outputs(i))
    if "msd" in outputs:  # a time-lapse: its tracks in TrackMate's form and its MSD
        write_track_exports(metrics, field_outputs(i))


def fail(i, reason):
    qc.write_failure(params.samples[i], reason, field_outputs(i), tables=TABLES, images=("labels", "nuclei"))
    if "msd" in outputs:
        write_track_exports({"status": "error"}, field_outputs(i))


run_batch(list(params.samples), analyse, fail, progress=Path(snakemake.log[0]).with_suffix(".progress"),
          retry=snakemake.resources.attempt > 1)
