"""Export outputs: checked before any work starts, written to a temporary file beside them and renamed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from triseg.errors import TrisegError


def check_output(path: str | os.PathLike) -> Path:
    """``path`` if a file can be written there: not a folder, and its nearest existing folder writable."""
    p = Path(path)
    if p.is_dir():
        raise TrisegError(f"output {p} is a folder, not a file")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TrisegError(f"output {p} cannot be written: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TrisegError(f"output {p} cannot be written: {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise TrisegError(f"output {p} exists and is read-only")
    return p


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it; a failure leaves nothing behind."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise TrisegError(f"output {p} cannot be written ({exc.strerror})") from None
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except OSError as exc:
        raise TrisegError(f"output {p} cannot be written ({exc.strerror})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return p
