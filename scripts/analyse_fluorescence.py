"""Snakemake entry point: fluorescence samples (a batch of still fields, or one time-lapse)."""
import logging

from exotrack.export import write_track_exports
from exotrack.fluorescence import process_sample
from exotrack.progress import steps

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
params = snakemake.params
outputs = {key: [value] if isinstance(value, str) else list(value) for key, value in snakemake.output.items()}
for i, sample in steps(enumerate(params.samples), total=len(params.samples), what="samples of the batch done"):
    metrics = process_sample(
        sample=sample,
        path=params.path[i],
        options=params.options,
        channels=params.channels[i],
        pixel_size_um=params.pixel_size_um[i],
        axes=params.axes[i],
        nuclei_labels=params.labels[i][0] or None,
        cell_labels=params.labels[i][1] or None,
        outputs={key: paths[i] for key, paths in outputs.items()},
    )
    if "msd" in outputs:  # a time-lapse: its tracks in TrackMate's form and its MSD
        write_track_exports(metrics, {key: paths[i] for key, paths in outputs.items()})
