"""``wsimito count``: count mitotic figures on slides, resumably, into one folder.

Per slide a GeoJSON, a CSV and a JSON; a manifest that makes a rerun resume; a
summary table (CSV and Parquet). Without ``--scheduler`` the slides are counted
here, one after another; with it, each slide is a task on a Dask cluster
(:func:`wsimito.count_many`). Both go through the same naming, manifest and
resume code (:mod:`wsimito.batch`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models.metadata import detector_note

MPP_HELP = (
    "level-0 resolution in µm/px for slides whose file states none (about 0.25 for a 40x scan, "
    "0.5 for 20x). A slide whose file states a resolution keeps the file's value; where "
    "--mpp differs from it by more than 1 %% a warning names both, and both are recorded"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``count`` command to the ``wsimito`` command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``wsimito`` parser.
    """
    count = sub.add_parser(
        "count",
        help="count mitotic figures on slides; GeoJSON, CSV and a summary table",
        description="Count mitotic figures on slides. Writes per slide a GeoJSON (QuPath), a "
        "CSV of the counted figures and a JSON summary, named <stem>-<hash of the path>; a "
        "manifest (wsimito-manifest.json); and summary.csv / summary.parquet. Run the same "
        "command again to resume: slides already done are skipped.",
    )
    count.add_argument(
        "slides", nargs="+", help="slide files, folders (the slide files inside) or glob patterns"
    )
    count.add_argument("-o", "--output", default=".", help="output folder (default: current)")
    count.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS|local",
        help="run on a Dask cluster: 'local' starts one on this machine, or give a scheduler "
        "address (tcp://host:8786). Default: count here, one slide after another",
    )
    count.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of --scheduler local (default: one per GPU, else one per 4 cores)",
    )
    count.add_argument("--detector", default="demo", help="registry name, weights path or URL")
    count.add_argument(
        "--sha256",
        default=None,
        help="SHA-256 of the weights at a --detector URL (required for URLs; 'skip' to accept "
        "any file, with a warning)",
    )
    count.add_argument("--mpp", type=float, default=None, help=MPP_HELP)
    count.add_argument(
        "--threshold", type=float, default=None, help="score threshold (default: the detector's)"
    )
    count.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    count.add_argument("--backend", default="auto", help="slide reader: auto, openslide, tiffslide")
    count.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a tile that cannot be read: 'raise' fails that slide (the batch goes on), 'skip' "
        "leaves it out of the analysed area and marks the result partial",
    )
    count.add_argument(
        "--no-tissue", action="store_true", help="process the whole image, not just tissue"
    )
    count.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run with other settings in the output folder (its outputs are removed)",
    )
    count.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    count.set_defaults(func=_count)


def _count(args: argparse.Namespace) -> int:
    from ..batch import BatchRun, batch_settings, cached_detector, check_options, find_slides

    out = Console(highlight=False, soft_wrap=True)
    options = check_options(
        {
            "threshold": args.threshold,
            "mpp": args.mpp,
            "device": args.device,
            "backend": args.backend,
            "on_error": args.on_error,
            "tissue": None if args.no_tissue else "auto",
        }
    )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}: give a positive number of processes")
    if args.workers is not None and args.scheduler != "local":
        raise ValueError(
            "--workers sets the size of a local cluster: add --scheduler local (the workers of "
            "a remote scheduler are started with `dask worker`)"
        )
    slides = find_slides(args.slides)
    lines: list[Text] = []
    finished: list[Mapping[str, Any]] = []

    def on_slide(entry: Mapping[str, Any]) -> None:
        finished.append(entry)
        lines.extend(_slide_lines(entry, note))

    spec = _spec(args.detector, args.sha256)
    if args.scheduler is None:
        detector = cached_detector(spec, args.device)
    else:
        from ..distributed import _driver_detector

        detector = _driver_detector(spec)
    note = detector_note(getattr(detector, "metadata", {}) or {})
    if note:
        out.print(Text(note, style="yellow"))
    try:
        if args.scheduler is None:
            from ..batch import run_sequential

            settings = batch_settings(spec, detector, options)
            runtime = {"executor": "sequential", "device": args.device}
            run = BatchRun.open(
                slides, args.output, settings, runtime=runtime, overwrite=args.overwrite
            )
            single = len(run.todo) == 1
            options_here = dict(options, progress=single and not args.quiet)
            batch = run.run(
                run_sequential(run, spec, options_here),
                progress=not args.quiet and not single,
                on_slide=on_slide,
            )
        else:
            from ..distributed import count_many

            batch = count_many(
                slides,
                args.output,
                client=None if args.scheduler == "local" else args.scheduler,
                detector=spec,
                workers=args.workers,
                overwrite=args.overwrite,
                progress=not args.quiet,
                on_slide=on_slide,
                **options,
            )
    except KeyboardInterrupt:
        for line in lines:
            out.print(line)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(
            Text(
                f"interrupted: {len(finished)} slide(s) were counted and recorded in "
                f"{args.output}; run the same command again to count the rest"
            )
        )
        return 130
    for line in lines:
        out.print(line)
    mine = batch.table[batch.table["slide"].isin(slides)]
    out.print(_table(mine))
    partial = mine[mine["partial"].fillna(False).astype(bool)]
    if len(partial):
        area = float(partial["skipped_area_mm2"].sum())
        out.print(
            Text(
                f"{len(partial)} result(s) are partial: tiles that could not be read left "
                f"{area:.3g} mm² of tissue out of the analysis (see skipped_area_mm2)",
                style="yellow",
            )
        )
    failed = int((mine["status"] == "failed").sum())
    done = int((mine["status"] == "done").sum())
    out.print(
        Text(
            f"{done} of {len(mine)} slide(s) done"
            + (f", {failed} failed" if failed else "")
            + (f" ({len(batch.skipped)} from an earlier run)" if batch.skipped else "")
            + f". GeoJSON (QuPath: File > Import objects), CSV and JSON per slide, "
            f"{batch.summary_csv.name} and the manifest are in {batch.manifest.parent}"
        )
    )
    if note:
        out.print(Text(note, style="yellow"))
    return 1 if failed else 0


def _spec(detector: str, sha256: str | None = None) -> str:
    """The detector as workers load it: a URL becomes its checked, cached local copy."""
    from ..batch import detector_spec

    if detector.startswith(("http://", "https://")):
        from ..models.registry import fetch_weights

        return str(fetch_weights(detector, sha256=sha256))
    return detector_spec(detector)


def _slide_lines(entry: Mapping[str, Any], note: str) -> list[Text]:
    """One line per warning of a slide, and one for its error; plain text, never markup."""
    name = str(entry.get("path"))
    found = []
    summary = entry.get("summary") or {}
    given, in_file = summary.get("mpp_given"), summary.get("mpp_file")
    for warning in entry.get("warnings") or []:
        if note and "trained on synthetic" in warning:
            continue  # said once for the whole run
        if "but mpp=" in warning and given and in_file:
            warning = (
                f"the file states {in_file:.6g} µm/px, so --mpp {given:g} was not used (it only "
                "sets the resolution of files without one); both are in the summary"
            )
        found.append(Text(f"warning: {name}: {warning}", style="yellow"))
    if entry.get("status") == "failed":
        found.append(Text(f"failed: {name}: {_error_text(entry)}", style="red"))
    return found


def _error_text(entry: Mapping[str, Any]) -> str:
    error = str(entry.get("error") or "unknown error")
    kind = entry.get("error_type")
    if kind == "MissingMPPError":
        return (
            "the file states no resolution (µm/px); pass --mpp with the level-0 resolution, "
            "e.g. --mpp 0.25 for a 40x scan or --mpp 0.5 for 20x"
        )
    if kind == "TileReadError":
        return f"{error} (--on-error skip counts the rest of the slide and marks it partial)"
    return error


def _table(rows: Any) -> Table:
    table = Table(title="mitotic count")
    table.add_column("slide", overflow="fold")
    for column in ("status", "count", "tissue mm²", "density /mm²", "hotspot", "partial"):
        table.add_column(column)
    records = rows.to_dict("records")
    names = [str(row["slide"]).rsplit("/", 1)[-1] for row in records]
    for row, name in zip(records, names, strict=True):
        if names.count(name) > 1:  # same file name in several folders: show the folder
            name = "/".join(str(row["slide"]).rsplit("/", 2)[-2:])
        partial = row["partial"] is True or (_known(row["partial"]) and bool(row["partial"]))
        table.add_row(
            Text(name),
            Text(str(row["status"])),
            Text(_number(row["count"], "{:d}")),
            Text(_number(row["tissue_area_mm2"], "{:.4f}")),
            Text(_number(row["density_per_mm2"], "{:.3f}")),
            Text(_number(row["hotspot_count"], "{:d}")),
            Text(
                f"yes: {row['skipped_area_mm2']:.3g} mm² unread"
                if partial
                else ("no" if row["status"] == "done" else "")
            ),
        )
    return table


def _known(value: Any) -> bool:
    """False for None, NaN and pandas' NA."""
    import pandas

    return not bool(pandas.isna(value))


def _number(value: Any, fmt: str) -> str:
    if not _known(value):
        return "n/a" if isinstance(value, float) else ""
    return fmt.format(int(value) if fmt.endswith("d}") else float(value))
