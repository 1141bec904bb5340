"""The ``exotrack`` command: demo data and sample sheets (the analysis itself runs in Snakemake)."""

from __future__ import annotations

import argparse
import sys

from .io import InputError


def _demo(args) -> int:
    from .demo import write_demo

    sheet = write_demo(args.directory, seed=args.seed)
    print(f"demo written; sample sheet: {sheet}", file=sys.stderr)
    return 0


def _samples(args) -> int:
    from .sheet import samples_from_pattern

    table = samples_from_pattern(args.directory, args.pattern, modality=args.modality)
    table.to_csv(sys.stdout, sep="\t", index=False)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="exotrack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="write the demo study (images, ground truth, sheet)")
    demo.add_argument("directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    samples = commands.add_parser(
        "samples", help="write a sample sheet (TSV, to standard output) from an image folder")
    samples.add_argument("directory")
    samples.add_argument("--pattern", required=True,
                         help="relative path with {field} placeholders, e.g. '{group}/{subject}_d{timepoint}.tif'")
    samples.add_argument("--modality", default="fluorescence",
                         choices=["fluorescence", "bli", "photoacoustic", "histology"])
    samples.set_defaults(run=_samples)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        print(f"exotrack {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
