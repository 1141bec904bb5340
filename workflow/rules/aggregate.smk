# Study-level tables, statistics, plots and provenance.


# One job for the whole study level: each step is quick, and a Python start-up per step (pandas,
# scipy.stats, matplotlib) would cost more than the step itself.
rule summarise_study:
    input:
        sheet=config["samples"],
        metrics=metrics_files(),
        decisions=qc_decisions(),
    output:
        samples=report(
            f"{RESULTS}/tables/samples.csv",
            caption="../report/samples.rst",
            category="Tables",
        ),
        parquet=f"{RESULTS}/tables/samples.parquet",
        subjects=report(
            f"{RESULTS}/tables/subjects.csv",
            caption="../report/subjects.rst",
            category="Tables",
        ),
        groups=report(
            f"{RESULTS}/tables/groups.csv",
            caption="../report/groups.rst",
            category="Tables",
        ),
        **group_plots(),
    params:
        schema=str(SCHEMAS / "samples.schema.yaml"),
        modalities=analysed_modalities(),
        control=config["control_group"],
        statistics=config["statistics"],
        marker_ratio=marker_ratio(),
    log:
        "logs/summarise_study.log",
    script:
        "../../scripts/summarise_study.py"


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
