# Bioluminescence: calibrated ROIs per IVIS acquisition, and time courses per mouse.


rule analyse_bli:
    wildcard_constraints:
        sample=sample_regex(samples_of("bli")),
    output:
        rois=f"{RESULTS}/bli/{{sample}}/rois.csv",
        radiance=f"{RESULTS}/bli/{{sample}}/radiance.tif",
        metrics=f"{RESULTS}/bli/{{sample}}/metrics.json",
        qc=report(
            f"{RESULTS}/qc/{{sample}}.png",
            caption="../report/qc_bli.rst",
            category="QC",
            subcategory="bioluminescence",
            labels={"sample": "{sample}"},
        ),
    params:
        path=sample_field("path"),
        raw=sample_raw_state,
        options=config["bli"],
        subject=sample_field("subject"),
    log:
        "logs/analyse_bli/{sample}.log",
    benchmark:
        "logs/benchmark/analyse_bli/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=lambda wildcards, attempt: 5 * attempt,
    script:
        "../../scripts/analyse_bli.py"


rule summarise_timecourse:
    input:
        sheet=config["samples"],
        rois=expand(f"{RESULTS}/bli/{{sample}}/rois.csv", sample=samples_of("bli")),
    output:
        report(
            f"{RESULTS}/tables/timecourse.csv",
            caption="../report/timecourse.rst",
            category="Tables",
        ),
    params:
        samples=samples_of("bli"),
        schema=str(SCHEMAS / "samples.schema.yaml"),
    log:
        "logs/summarise_timecourse.log",
    script:
        "../../scripts/summarise_timecourse.py"
