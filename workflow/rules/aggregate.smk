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


def write_study_from_finished():
    """After a failed run: the study level from the samples that finished, the others marked.

    Called by ``onerror``. A sample whose analysis job died (killed for its memory or time, and
    out of retries) has no metrics.json, and Snakemake does not run the study level without it;
    every other sample's result would be missing from the tables. The tables are written here,
    outside Snakemake's bookkeeping; the next run rebuilds the lost samples and then the tables.
    """
    metrics = metrics_files()
    finished = [m for m in metrics if Path(m).exists()]
    if len(finished) == len(metrics):  # nothing lost: the failure was elsewhere, and is reported
        return
    outputs = {name: str(path) for name, path in rules.summarise_study.output.items()}
    try:
        from exotrack.aggregate import write_study

        write_study(config["samples"], str(SCHEMAS / "samples.schema.yaml"), finished, outputs,
                    decisions=(qc_decisions() or [None])[0], modalities=analysed_modalities(),
                    control=config["control_group"], statistics=config["statistics"],
                    marker_ratio=marker_ratio())
    except Exception as exc:  # the run has failed already; say why the tables are missing too
        print(f"exotrack: the study tables could not be written: {exc}", file=sys.stderr)
        return
    print(f"exotrack: {len(metrics) - len(finished)} sample(s) did not finish; the study tables "
          f"({outputs['samples']} and the others) were written from the {len(finished)} that did, the others "
          "marked 'error: analysis did not finish'. Run again to analyse them.", file=sys.stderr)
