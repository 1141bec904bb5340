# Study-level tables, statistics, plots and provenance.


rule aggregate_samples:
    input:
        sheet=config["samples"],
        metrics=metrics_files(),
        decisions=qc_decisions(),
    output:
        csv=report(
            f"{RESULTS}/tables/samples.csv",
            caption="../report/samples.rst",
            category="Tables",
        ),
        parquet=f"{RESULTS}/tables/samples.parquet",
    params:
        schema=str(SCHEMAS / "samples.schema.yaml"),
    log:
        "logs/aggregate_samples.log",
    script:
        "../../scripts/aggregate_samples.py"


rule summarise_subjects:
    input:
        samples=f"{RESULTS}/tables/samples.csv",
    output:
        report(
            f"{RESULTS}/tables/subjects.csv",
            caption="../report/subjects.rst",
            category="Tables",
        ),
    params:
        marker_ratio=marker_ratio(),
    log:
        "logs/summarise_subjects.log",
    script:
        "../../scripts/summarise_subjects.py"


rule compare_groups:
    input:
        samples=f"{RESULTS}/tables/samples.csv",
    output:
        report(
            f"{RESULTS}/tables/groups.csv",
            caption="../report/groups.rst",
            category="Tables",
        ),
    params:
        control=config["control_group"],
        statistics=config["statistics"],
        marker_ratio=marker_ratio(),
    log:
        "logs/compare_groups.log",
    script:
        "../../scripts/compare_groups.py"


rule plot_groups:
    input:
        samples=f"{RESULTS}/tables/samples.csv",
        groups=f"{RESULTS}/tables/groups.csv",
    output:
        png=report(
            f"{RESULTS}/plots/{{modality}}.png",
            caption="../report/plot_groups.rst",
            category="Plots",
            labels={"modality": "{modality}"},
        ),
        svg=f"{RESULTS}/plots/{{modality}}.svg",
    params:
        control=config["control_group"],
        marker_ratio=marker_ratio(),
    log:
        "logs/plot_groups/{modality}.log",
    script:
        "../../scripts/plot_groups.py"


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
