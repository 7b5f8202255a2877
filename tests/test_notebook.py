"""examples/quickstart.ipynb runs top to bottom in a real Jupyter kernel (this interpreter)
and shows what it promises: the synthetic-detector warning, an HTML progress bar without
ipywidgets, the plots, and a GeoJSON that reloads to the same figures."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
# Kernel start, torch import and counting the CMU sample on CPU take about 20 s.
TIMEOUT_S = 300


def _kernel(tmp_path: Path) -> KernelManager:
    """A kernel that runs this very interpreter (not whatever ``python`` is on PATH)."""
    spec = tmp_path / "kernels" / "wsimito-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "wsimito test",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="wsimito-test", kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, sample):
    sample("slides/cmu-1-small-region.svs")  # the notebook fetches it through the same registry
    tmp_path = tmp_path_factory.mktemp("notebook")
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
    assert not stored, "commit the notebook with its outputs cleared"
    with pytest.MonkeyPatch.context() as env:
        path = os.environ.get("PYTHONPATH")
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), path])))
        env.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # even under CI's Agg
        client = nbclient.NotebookClient(
            nb,
            km=_kernel(tmp_path),
            timeout=TIMEOUT_S,
            resources={"metadata": {"path": str(work)}},
        )
        client.execute()
    return nb, work


def _cell(nb, tag: str):
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.extend(str(v) for k, v in out.data.items() if k.startswith("text/"))
    return "\n".join(parts)


def test_every_cell_ran_once_in_order(executed):
    nb, _ = executed
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))


def test_counting_shows_the_synthetic_warning_and_an_html_progress_bar(executed):
    nb, _ = executed
    count = _cell(nb, "count")
    stderr = "".join(o.text for o in count.outputs if o.output_type == "stream")
    assert "trained on synthetic mitotic figures only" in stderr
    html = _text(count.outputs)
    assert "<progress" in html  # wsimito.progress draws in the notebook
    assert "tiles/s" in html
    everything = "\n".join(_text(c.get("outputs", [])) for c in nb.cells)
    assert "ipywidgets" not in everything and "IProgress" not in everything


def test_the_plot_cells_draw_images(executed):
    nb, _ = executed
    for tag in ("tissue", "plot", "region", "density", "gallery"):
        outputs = _cell(nb, tag).outputs
        assert any("image/png" in o.get("data", {}) for o in outputs), tag


def test_the_exported_geojson_reloads_to_the_counted_figures(executed):
    nb, work = executed
    assert (work / "cmu-1-small-region.geojson").is_file()
    assert (work / "cmu-gallery.html").is_file()
    text = _text(_cell(nb, "reload").outputs)
    found = re.search(
        r"reloaded (\d+) mitotic figures; the result counted (\d+); same points: (\w+)", text
    )
    assert found, text
    reloaded, counted, same = found.groups()
    assert reloaded == counted and int(counted) > 0 and same == "True"
