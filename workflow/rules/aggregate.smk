# Study-level tables and provenance.


rule aggregate_samples:
    input:
        sheet=config["samples"],
        metrics=metrics_files(),
    output:
        samples=report(
            f"{RESULTS}/tables/samples.csv",
            caption="../report/samples.rst",
            category="Tables",
        ),
    params:
        schema=str(SCHEMAS / "samples.schema.yaml"),
    log:
        "logs/aggregate_samples.log",
    script:
        "../../scripts/aggregate_samples.py"


rule record_provenance:
    input:
        sheet=config["samples"],
        metrics=metrics_files(),
    output:
        versions=f"{RESULTS}/provenance/versions.json",
        config=f"{RESULTS}/provenance/config.yaml",
        sheet=f"{RESULTS}/provenance/samples.tsv",
    params:
        config=config,
        # Not inputs: a missing raw file is a sample's problem, recorded in its status.
        images=samples["path"].tolist(),
    log:
        "logs/record_provenance.log",
    script:
        "../../scripts/record_provenance.py"
