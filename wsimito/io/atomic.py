"""Write files atomically: to a temporary name in the same folder, then rename.

A reader never sees half a file: until the rename the target keeps its old
content (or does not exist), and an exception removes the temporary file.
``os.replace`` is atomic when source and target are on the same file system,
which the shared folder guarantees.

A process killed mid-write cannot remove its temporary file. Temporaries are
therefore named after their writer, ``.<name>.<host>-<pid>-<hex>.tmp``, and
every write of ``<name>`` first removes that target's temporaries whose writer
is gone: a process of this host that no longer runs, or any writer (another
host's, or an older unnamed one) whose file is older than
:data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: Age, seconds, after which a temporary whose writer cannot be checked counts as stale.
STALE_AFTER_S = 24 * 3600.0


def _target(path: str | os.PathLike[str]) -> Path:
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


def _host() -> str:
    """Return the machine's name, reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that were killed.

    A temporary ``.<name>.<host>-<pid>-<hex>.tmp`` is stale when ``host`` is
    this machine and process ``pid`` no longer runs, or when it is older than
    :data:`STALE_AFTER_S` seconds (a writer on another machine, or the older
    ``.<name>.<hex>.tmp`` form). Temporaries of live writers are kept.

    Parameters
    ----------
    path : str or os.PathLike
        The target file whose temporaries are checked.

    Returns
    -------
    list of Path
        The temporaries removed.
    """
    target = Path(path)
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.(?:(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-)?"
        r"[0-9a-f]{12,32}\.tmp$"
    )
    host, now = _host(), time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        mine = match["host"] == host and match["pid"] is not None
        dead = mine and not _pid_alive(int(match["pid"]))
        if dead or age > STALE_AFTER_S:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success rename it to ``path``.

    For writers that want a file name rather than a file object (e.g. SQLite).
    The temporary file does not exist yet when yielded. On an exception it is
    removed and ``path`` is left as it was. Temporaries of ``path`` left by
    killed writers are removed first (see :func:`remove_stale_temporaries`).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists); its folder must exist.

    Yields
    ------
    pathlib.Path
        The temporary path to write, in the folder of ``path``.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> scratch = tempfile.TemporaryDirectory()
    >>> folder = Path(scratch.name)
    >>> with atomic_path(folder / "counts.bin") as tmp:
    ...     _ = tmp.write_bytes(b"42")
    >>> (folder / "counts.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
    (b'42', ['counts.bin'])
    >>> scratch.cleanup()
    """
    target = _target(path)
    remove_stale_temporaries(target)
    tmp = _temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text file for writing that appears at ``path`` only when complete.

    The data are flushed to disk before the rename. Permissions follow the
    process umask, as for a file opened with ``open(path, "w")``. On an
    exception inside the ``with`` block the temporary file is removed and
    ``path`` keeps its old content (or stays absent).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists); its folder must exist.
    newline : str, optional
        As for :func:`open`: ``None`` writes each newline as the platform's
        line ending, ``""`` writes line endings as given.

    Yields
    ------
    typing.IO of str
        The open text file (UTF-8).

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> scratch = tempfile.TemporaryDirectory()
    >>> target = Path(scratch.name) / "note.txt"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write("3 mitoses per mm²")
    >>> target.read_text(encoding="utf-8")
    '3 mitoses per mm²'
    >>> scratch.cleanup()
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
