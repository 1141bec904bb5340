# exotrack: exosome-tracking images to per-sample tables.
# Configuration: config.yaml (validated against workflow/schemas/config.schema.yaml).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fluorescence.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/histology.smk"
include: "workflow/rules/bli.smk"
include: "workflow/rules/photoacoustic.smk"
include: "workflow/rules/markers.smk"
include: "workflow/rules/wound.smk"
include: "workflow/rules/transwell.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        all_outputs(),
    default_target: True


onsuccess:
    cancel_rescheduling_timers()


onerror:
    cancel_rescheduling_timers()
    write_study_from_finished()
