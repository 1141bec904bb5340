# Validation of the config and the sample sheet, and input functions shared by the rules.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from exotrack import demo as exo_demo
from exotrack import sheet as exo_sheet

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
RESULTS = "results"


def _load():
    # A biologist should see what is wrong and where, not a traceback.
    try:
        validated = exo_sheet.validate_config(dict(config), SCHEMAS / "config.schema.yaml")
        sheet_path = Path(validated["samples"])
        demo_dir = Path(validated["demo"]["dir"])
        if not sheet_path.exists() and sheet_path.parent.resolve() == demo_dir.resolve():
            exo_demo.write_demo(demo_dir, seed=validated["demo"]["seed"])
        return validated, exo_sheet.load_sample_sheet(sheet_path, SCHEMAS / "samples.schema.yaml")
    except exo_sheet.SheetError as exc:
        raise WorkflowError(str(exc)) from None


_validated, samples = _load()
config.update(_validated)


wildcard_constraints:
    sample=r"[A-Za-z0-9_.-]+",


def samples_of(modality):
    return samples.index[samples["modality"] == modality].tolist()


def sample_field(column):
    """Input/params function: one column of the sample's sheet row."""
    return lambda wildcards: samples.loc[wildcards.sample, column]


def metrics_files():
    return expand(f"{RESULTS}/fluorescence/{{sample}}/metrics.json", sample=samples_of("fluorescence"))


def all_outputs():
    return [f"{RESULTS}/tables/samples.csv", f"{RESULTS}/provenance/versions.json"]
