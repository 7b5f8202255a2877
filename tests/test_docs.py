"""The documentation runs: every Python block of README.md and docs/*.md executes, and the
site builds with ``mkdocs build --strict``.

Blocks fenced as ``python`` (or ``py``, ``python3``) run in order, one test per block, in one
fresh namespace per file and a temporary working directory per file, with WSIMITO_DATA_DIR
set by conftest.py. A block fenced ```` ```python title="not run" ```` is shown but not run
(it needs a user's own file, a network download or a cluster); ``pycon``, ``text``, ``bash``
and unlabelled blocks are not Python to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python", "py", "python3"}
NOT_RUN = 'title="not run"'
# The whole docs test must stay fast; a block slower than this is a bad example.
BLOCK_LIMIT_S = 30.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str

    @property
    def runs(self) -> bool:
        words = self.info.split()
        return bool(words) and words[0].lower() in RUN_LANGS and NOT_RUN not in self.info

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened with ``fence`` (same character, as long, no info)."""
    match = _FENCE.match(line)
    return bool(
        match
        and match["fence"][0] == fence[0]
        and len(match["fence"]) >= len(fence)
        and not match["info"].strip()
    )


def code_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with its info string and dedented code."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start, body = i + 1, []
        i += 1
        while i < len(lines):
            if _closes(lines[i], fence):
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        else:
            raise AssertionError(f"{path.relative_to(ROOT)}:{start}: code block never closed")
        blocks.append(Block(path, start, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


ALL_BLOCKS = [b for path in DOC_FILES for b in code_blocks(path)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.runs]


@pytest.fixture(scope="module", autouse=True)
def _restore_detector_registry():
    """Pages register detectors by name (a process-wide registry); later test modules must
    see only the built-in names again."""
    from wsimito.models import registry

    saved = dict(registry._DETECTOR_WEIGHTS)
    yield
    registry._DETECTOR_WEIGHTS.clear()
    registry._DETECTOR_WEIGHTS.update(saved)


@pytest.fixture(scope="module")
def doc_state(tmp_path_factory):
    """Per file: its namespace, its working directory, and whether an earlier block failed."""
    state: dict[Path, dict] = {}

    def get(path: Path) -> dict:
        if path not in state:
            cwd = tmp_path_factory.mktemp(path.stem.replace(".", "-"))
            state[path] = {"ns": {"__name__": "__main__"}, "cwd": cwd, "failed": None}
        return state[path]

    return get


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.name for b in RUN_BLOCKS])
def test_doc_block_runs(block: Block, doc_state, monkeypatch):
    """Each Python block runs after the blocks above it in the same file."""
    state = doc_state(block.path)
    if state["failed"]:
        pytest.skip(f"an earlier block of this file failed ({state['failed']})")
    monkeypatch.chdir(state["cwd"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    code = compile(block.code, f"{block.name}", "exec")
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            exec(code, state["ns"])
    except BaseException:
        state["failed"] = block.name
        raise
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    elapsed = time.perf_counter() - started
    assert elapsed < BLOCK_LIMIT_S, f"{block.name} took {elapsed:.1f} s: make the example smaller"


def test_every_doc_file_is_parsed():
    """The parser finds blocks in the files that have them, and fences that do not run are rare."""
    assert len(RUN_BLOCKS) >= 20
    skipped = [b.name for b in ALL_BLOCKS if NOT_RUN in b.info]
    assert len(skipped) <= 8, f"too many blocks marked not run: {skipped}"


def test_block_parser_reads_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n- item\n\n    ```py\n    y = x + 1\n    ```\n\n"
        '```python title="not run"\nopen("mine.svs")\n```\n\n````text\n```python\n````\n',
        encoding="utf-8",
    )
    blocks = code_blocks(page)
    assert [(b.line, b.runs) for b in blocks] == [(3, True), (9, True), (13, False), (17, False)]
    assert blocks[1].code == "y = x + 1\n"
    assert blocks[3].code == "```python\n"


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: no broken link, no missing page, no docstring warning."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="mkdocs-material is in the docs extra")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is needed")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's notice about MkDocs 2.0
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert not re.search(r"^(WARNING|ERROR)", done.stderr, flags=re.M), done.stderr[-6000:]
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in ("index.html", "installation.html", "qupath.html", "api/count.html"):
        assert page in pages, sorted(pages)
    api = (site / "api" / "count.html").read_text(encoding="utf-8")
    assert "count_mitoses" in api and "tissue_area_mm2" in api
    # Sphinx roles in docstrings became links (docs/_ext/sphinx_roles.py), not raw text.
    assert 'href="tissue.html#wsimito.tissue.Tissue"' in api
    for page in (site / "api").rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        raw = re.findall(r":(?:func|class|meth|mod|attr|data|exc):`|&lt;autoref", html)
        assert not raw, f"{page.relative_to(site)}: {raw[:3]}"
    shutil.rmtree(site)
