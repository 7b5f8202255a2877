"""``wsimito count``: count mitotic figures on slides; GeoJSON and a summary CSV."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..models.metadata import detector_note

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


def add_parser(sub: argparse._SubParsersAction) -> None:
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


def _count(args: argparse.Namespace) -> int:
    from ..models import load_detector
    from ..pipeline import count_mitoses

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


def _write_csv(path: Path, rows: list[dict]) -> None:
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
