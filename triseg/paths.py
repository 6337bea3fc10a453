"""Files on disk without surprises: writability checks made before any work, temp files named
``.<name>.<pid>.tmp`` beside their target, and the removal of those a killed process left behind.

Nothing here imports torch, so option checks (:mod:`triseg.options`) can use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import struct
from pathlib import Path
from typing import Any, IO, Iterator

from triseg.errors import TrisegError

TEMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")
_CLEANED: set[str] = set()
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL, _FS_APPEND_FL = 0x10, 0x20


def temp_path(path: str | os.PathLike) -> Path:
    """``.<name>.<pid>.tmp`` beside ``path``: the temp file this process writes before renaming."""
    p = Path(path)
    return p.parent / f".{p.name}.{os.getpid()}.tmp"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.<pid>.tmp`` files in ``folder`` whose writer is dead; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to ``.<name>.<pid>.tmp`` beside ``path`` and rename it over ``path`` when the block ends;
    an exception (or a kill) never leaves a half-written ``path``, and an exception removes the temp file.

    The folder's stale temp files (dead writers) are removed first (once per folder and process).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    folder = os.path.abspath(p.parent)
    if folder not in _CLEANED:
        clean_stale_temps(folder)
        _CLEANED.add(folder)
    tmp = temp_path(p)
    try:
        with open(tmp, mode) as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _inode_flags(path: Path) -> int:
    """The ext2-style inode flags (immutable, append-only) of ``path``; 0 where the file system has none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        return struct.unpack("q", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("q", 0)))[0] & 0xFFFFFFFF
    except OSError:
        return 0
    finally:
        os.close(fd)


def locked(path: Path) -> str | None:
    """Why ``path`` cannot be changed even by root (immutable, append-only, read-only mount), or None."""
    flags = _inode_flags(path)
    if flags & _FS_IMMUTABLE_FL:
        return "is immutable (chattr +i)"
    if flags & _FS_APPEND_FL:
        return "is append-only (chattr +a)"
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        pass
    return None


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into ``folder`` (created when missing), or None.

    Judged without writing anything: the nearest existing ancestor must be a folder whose permission
    bits allow writing (so that root also leaves read-only folders alone), not immutable and not on a
    read-only mount.
    """
    p = Path(folder)
    existing = p
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        kind = "a file" if existing.exists() else "a broken link"
        return "is " + kind + ", not a folder" if existing == p else f"is inside {existing}, which is {kind}"
    where = "" if existing == p else f" ({existing})"
    mode = existing.stat().st_mode
    if not mode & 0o222 or not os.access(existing, os.W_OK | os.X_OK):
        return f"is not writable{where}" if where else "is not writable (read-only folder)"
    why = locked(existing)
    return None if why is None else (f"cannot be written: {existing} {why}" if where else why)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be (re)written by a rename into its folder, or None."""
    p = Path(path)
    if p.is_dir():
        return "is a folder, not a file"
    problem = folder_problem(p.parent)
    if problem is not None:
        return f"cannot be written: {p.parent} {problem}"
    if os.path.lexists(p):
        why = locked(p)
        if why is not None:
            return why
    return None


def input_problem(path: str | os.PathLike, folder: bool | None = False) -> str | None:
    """Why ``path`` cannot be read as a file (``folder=False``), a folder (True) or either (None), or None."""
    p = Path(path)
    if not p.exists():
        return "not found" if not os.path.lexists(p) else "is a broken link"
    if folder is False and p.is_dir():
        return "is a folder, not a file"
    if folder is True and not p.is_dir():
        return "is a file, not a folder"
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        return "cannot be read (permission denied)"
    return None


def check_output_dir(folder: str | os.PathLike, subfolders: tuple[str, ...] = ()) -> Path:
    """``folder`` if outputs can be written there (and into each existing ``subfolders``); else a one-line error."""
    p = Path(folder)
    problem = folder_problem(p)
    if problem is not None:
        raise TrisegError(f"output folder {p} {problem}")
    for sub in subfolders:
        q = p / sub
        if os.path.lexists(q):
            problem = folder_problem(q)
            if problem is not None:
                raise TrisegError(f"output folder {q} {problem}")
    return p


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` if a file can be written there by a rename; else a one-line error."""
    problem = file_problem(path)
    if problem is not None:
        raise TrisegError(f"output {path} {problem}")
    return Path(path)


def check_result_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` if ``name`` is a plain file name that stays inside ``folder`` and can be written."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or "/" in name:
        raise TrisegError(f"result file {name!r} must be a plain file name (no folders)")
    return check_output_file(Path(folder) / name)


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the file and what to do."""
    name = exc.filename if exc.filename is not None else ""
    what = exc.strerror or type(exc).__name__
    hint = {errno.ENOSPC: "free some disk space", errno.EACCES: "check the permissions",
            errno.EPERM: "check the permissions and attributes (lsattr)", errno.EROFS: "use a writable folder",
            errno.EISDIR: "pass a file, not a folder", errno.ENOTDIR: "a part of the path is a file",
            errno.ENOENT: "check the path"}.get(exc.errno or 0)
    return f"{name}: {what}" + (f" ({hint})" if hint else "") if name else what + (f" ({hint})" if hint else "")


def read_json(path: str | os.PathLike, what: str, fix: str = "") -> Any:
    """The JSON in ``path``; a missing, unreadable or damaged file is one line naming ``what`` (and ``fix``,
    what to do about it, when given)."""
    p = Path(path)
    tail = f": {fix}" if fix else ""
    if not p.exists():
        raise TrisegError(f"{what} {p} not found{tail}")
    if not p.is_file():
        raise TrisegError(f"{what} {p} is not a file{tail}")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrisegError(f"{what} {p} is not valid JSON ({exc}){tail}") from None
    except RecursionError:
        raise TrisegError(f"{what} {p} is nested too deeply to be read{tail}") from None
    except OSError as exc:
        raise TrisegError(f"{what} {p} cannot be read ({exc.strerror}){tail}") from None
