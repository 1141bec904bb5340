"""The ``exotrack`` command: demo data, sample sheets and the napari viewer (the analysis itself
runs in Snakemake)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
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


def open_viewer(results, sample=None):
    """A napari viewer with the sample browser docked on ``results``, at ``sample`` if given."""
    import napari

    from .napari_plugin import SampleBrowser

    viewer = napari.Viewer(title="exotrack")
    browser = SampleBrowser(viewer, results=results)
    viewer.window.add_dock_widget(browser, name="exotrack samples", area="right")
    if sample:
        if sample not in list(browser.sample.choices):
            raise InputError(f"sample {sample!r} is not in {browser.results / 'tables' / 'samples.csv'}")
        browser.sample.value = sample
    return viewer, browser


def _view(args) -> int:
    import napari

    open_viewer(args.results, args.sample)
    napari.run()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="exotrack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"exotrack {__version__}")
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

    view = commands.add_parser("view", help="open results in napari with the sample browser")
    view.add_argument("results", help="the results folder (holding tables/samples.csv)")
    view.add_argument("sample", nargs="?")
    view.set_defaults(run=_view)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        print(f"exotrack {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
