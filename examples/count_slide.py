"""Count mitotic figures on one slide and write QuPath GeoJSON.

Usage: python examples/count_slide.py SLIDE [--mpp 0.25] [--detector demo]

The bundled "demo" detector was trained on synthetic mitotic figures only: use it to
try the pipeline, not to count real mitoses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import wsimito


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("slide")
    parser.add_argument(
        "--mpp", type=float, default=None, help="level-0 µm/px if the file has none"
    )
    parser.add_argument("--detector", default="demo")
    args = parser.parse_args()

    with wsimito.open_slide(args.slide, mpp=args.mpp) as slide:
        print(slide)
        tissue = wsimito.detect_tissue(slide)  # at 8 µm/px
        print(f"tissue: {tissue.area_mm2:.2f} mm²")
        result = wsimito.count_mitoses(slide, args.detector, tissue=tissue)
    print(f"{result.count} mitotic figures, {result.density_per_mm2:.2f} per mm² of tissue")
    hotspot = result.hotspot
    print(f"hotspot: {hotspot.count} figures in {hotspot.area_mm2:.2f} mm²")
    out = result.to_geojson(Path(args.slide).name + ".geojson")
    print(f"QuPath: File > Import objects > {out}")


if __name__ == "__main__":
    main()
