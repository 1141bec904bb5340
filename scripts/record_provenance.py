"""Snakemake entry point: software versions, effective config and input checksums."""
import logging
from pathlib import Path

import yaml

from exotrack import io
from exotrack.provenance import checksum, software_versions

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
io.write_json(
    {"software": software_versions(),
     "inputs": {path: checksum(path) for path in snakemake.params.images}},
    snakemake.output.versions,
)
io.write_text(yaml.safe_dump(dict(snakemake.params.config), sort_keys=False), snakemake.output.config)
io.write_text(Path(snakemake.input.sheet).read_text(), snakemake.output.sheet)
