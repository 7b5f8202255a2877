"""Write files atomically: to a temporary name in the same folder, then rename.

A reader never sees half a file: until the rename the target keeps its old
content (or does not exist), and an exception removes the temporary file.
``os.replace`` is atomic when source and target are on the same file system,
which the shared folder guarantees.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _target(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"{target} is a folder; give a file name, e.g. {target / 'result.geojson'}"
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"folder {target.parent} does not exist; create it first "
            f"(e.g. Path({str(target.parent)!r}).mkdir(parents=True))"
        )
    return target


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success rename it to ``path``.

    For writers that want a file name rather than a file object (e.g. SQLite).
    The temporary file does not exist yet when yielded. On an exception it is
    removed and ``path`` is left as it was.
    """
    target = _target(path)
    tmp = _temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text file for writing that appears at ``path`` only when complete.

    The data are flushed to disk before the rename. Permissions follow the
    process umask, as for a file opened with ``open(path, "w")``.
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
