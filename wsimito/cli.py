"""Command line: ``wsimito info``, ``wsimito count`` and ``wsimito demo``."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

SUMMARY_COLUMNS = [
    "slide",
    "count",
    "tissue_area_mm2",
    "density_per_mm2",
    "hotspot_count",
    "hotspot_area_mm2",
    "threshold",
    "mpp",
    "detector",
    "geojson",
]


def _info(args: argparse.Namespace) -> int:
    from .slide import open_slide

    console = Console()
    for path in args.slides:
        slide = open_slide(path, backend=args.backend, mpp=args.mpp)
        table = Table(title=str(path), show_header=False)
        w, h = slide.dimensions
        table.add_row("backend", slide.backend)
        table.add_row("size (level 0)", f"{w} x {h} px")
        if slide.has_mpp:
            table.add_row("mpp", f"{slide.mpp:.4g} µm/px")
            table.add_row(
                "physical size", f"{w * slide.mpp / 1000:.2f} x {h * slide.mpp / 1000:.2f} mm"
            )
        else:
            table.add_row("mpp", "not in the file: pass --mpp")
        table.add_row(
            "levels",
            ", ".join(
                f"{d[0]}x{d[1]} ({ds:.4g}x)"
                for d, ds in zip(slide.level_dimensions, slide.level_downsamples, strict=True)
            ),
        )
        table.add_row("bounds", "x={}, y={}, w={}, h={}".format(*slide.bounds))
        vendor = slide.properties.get("openslide.vendor") or slide.properties.get(
            "tiffslide.vendor"
        )
        if vendor:
            table.add_row("vendor", vendor)
        console.print(table)
    return 0


def _count(args: argparse.Namespace) -> int:
    from .models import load_detector
    from .pipeline import count_mitoses

    console = Console(stderr=False)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    detector = load_detector(args.detector, device=args.device)
    note = detector_note(getattr(detector, "metadata", {}) or {})
    if note:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    rows = []
    for path in args.slides:
        result = count_mitoses(
            path,
            detector,
            threshold=args.threshold,
            mpp=args.mpp,
            progress=not args.quiet,
            tissue="auto" if not args.no_tissue else None,
        )
        geojson = out / (Path(path).name + ".geojson")
        result.to_geojson(geojson)
        hs = result.hotspot
        rows.append(
            {
                "slide": str(path),
                "count": result.count,
                "tissue_area_mm2": f"{result.tissue_area_mm2:.4f}",
                "density_per_mm2": f"{result.density_per_mm2:.3f}",
                "hotspot_count": hs.count if hs is not None else "",
                "hotspot_area_mm2": f"{hs.area_mm2:.4f}" if hs is not None else "",
                "threshold": result.threshold,
                "mpp": f"{result.slide_mpp:.4g}",
                "detector": result.detector_name,
                "geojson": str(geojson),
            }
        )
    summary = out / "summary.csv"
    _write_csv(summary, rows)
    table = Table(title="mitotic count")
    for col in ("slide", "count", "tissue_area_mm2", "density_per_mm2", "hotspot_count"):
        table.add_column(col.replace("_", " "))
    for row in rows:
        table.add_row(
            Path(row["slide"]).name,
            str(row["count"]),
            row["tissue_area_mm2"],
            row["density_per_mm2"],
            str(row["hotspot_count"]),
        )
    console.print(table)
    console.print(f"GeoJSON (QuPath: File > Import objects) and {summary.name} written to {out}")
    if note:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    return 0


def detector_note(metadata: dict) -> str:
    """A one-line warning for detectors trained on synthetic data or not meant for diagnosis."""
    parts = []
    training = str(metadata.get("training_data", ""))
    if "synthetic" in training.lower():
        parts.append("This detector was trained on synthetic data only.")
    use = metadata.get("intended_use")
    if use:
        parts.append(f"Intended use: {use}.")
    return " ".join(parts)


def _write_csv(path: Path, rows: list[dict]) -> None:
    from .io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), seed=args.seed, size=args.size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsimito", description="Count mitotic figures in H&E slides."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a slide's size, resolution and pyramid")
    info.add_argument("slides", nargs="+")
    info.add_argument("--backend", default="auto")
    info.add_argument("--mpp", type=float, default=None, help="level-0 resolution, µm/px")
    info.set_defaults(func=_info)

    count = sub.add_parser("count", help="count mitotic figures; write GeoJSON and a summary CSV")
    count.add_argument("slides", nargs="+")
    count.add_argument("-o", "--output", default=".", help="output folder (default: current)")
    count.add_argument("--detector", default="demo", help="registry name, weights path or URL")
    count.add_argument(
        "--mpp", type=float, default=None, help="level-0 resolution, µm/px, for files without one"
    )
    count.add_argument(
        "--threshold", type=float, default=None, help="score threshold (default: the detector's)"
    )
    count.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    count.add_argument(
        "--no-tissue", action="store_true", help="process the whole image, not just tissue"
    )
    count.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    count.set_defaults(func=_count)

    demo = sub.add_parser("demo", help="synthetic slide -> count -> GeoJSON, overview PNG and F1")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument(
        "--size",
        type=int,
        default=8000,
        help="slide side in px at 0.25 µm/px (8000 = 2 mm, room for the 10-HPF hotspot)",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import WsimitoError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WsimitoError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
