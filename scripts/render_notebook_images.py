"""Run examples/quickstart.ipynb and save its plots as the pictures of docs/notebooks.md.

    .venv/bin/python scripts/render_notebook_images.py      # writes docs/images/notebook-*.png

The notebook runs in a Jupyter kernel on this interpreter, in a temporary
folder (its GeoJSON and gallery files are thrown away). The first image of
each tagged cell is saved as ``docs/images/notebook-<tag>.png``, reduced to a
256-colour palette so that each stays well under 200 KB. The notebook itself
is not changed: its stored outputs stay empty.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
OUT = ROOT / "docs" / "images"
TAGS = ("tissue", "plot", "region", "density", "gallery")
MAX_BYTES = 200_000


def run_notebook(folder: Path) -> nbformat.NotebookNode:
    """The notebook executed in ``folder`` by a kernel on ``sys.executable``."""
    spec = folder / "kernels" / "wsimito"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    manager = KernelManager(
        kernel_name="wsimito",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder / "kernels")]),
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, km=manager, timeout=600, resources={"metadata": {"path": str(folder)}}
    ).execute()
    return nb


def save_images(nb: nbformat.NotebookNode, out: Path) -> list[Path]:
    written = []
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", [])) & set(TAGS)
        pngs = [
            o.data["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
        ]
        if not tags or not pngs:
            continue
        image = Image.open(io.BytesIO(base64.b64decode(pngs[0]))).convert("RGB")
        path = out / f"notebook-{tags.pop()}.png"
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
        if path.stat().st_size > MAX_BYTES:
            raise SystemExit(f"{path} is {path.stat().st_size} bytes, over {MAX_BYTES}")
        written.append(path)
    return written


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nb = run_notebook(Path(tmp))
    for path in save_images(nb, OUT):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1000:.0f} KB")


if __name__ == "__main__":
    main()
