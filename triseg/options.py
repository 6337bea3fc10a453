"""Typed options: a dataclass field with its help, legal range and CLI spelling in one place.

Every job's settings are a dataclass built from :func:`option` fields (CleanRL's ``Args`` style).
The CLI generates its options from these fields (:mod:`triseg.cli.parser`); the Python API builds
the same dataclasses directly. Either way :meth:`Options.__post_init__` checks every value against
its declared range, so a bad value fails in one line before any work starts or any file is made.

A field may also be a nested :class:`Options` dataclass (a strategy's hyperparameters, the
calibration settings): the CLI shows it as an option group with the same flat option names.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from triseg import paths
from triseg.errors import TrisegError

Check = Callable[[Any], "str | None"]
INT_MAX = 2**31 - 1


def flag(name: str) -> str:
    """The CLI spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def at_least(low: float) -> Check:
    """Finite and >= ``low``."""
    return lambda v: None if _finite(v) and v >= low else f"must be a number >= {low:g}"


def above(low: float) -> Check:
    """Finite and > ``low``."""
    return lambda v: None if _finite(v) and v > low else f"must be a finite number > {low:g}"


def between(low: float, high: float, low_open: bool = False) -> Check:
    """Finite and in [low, high] (or (low, high] with ``low_open``)."""
    span = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def check(v: Any) -> str | None:
        ok = _finite(v) and (v > low if low_open else v >= low) and v <= high
        return None if ok else f"must be in {span}"

    return check


def finite(v: Any) -> str | None:
    """Any finite number."""
    return None if _finite(v) else "must be a finite number"


def not_empty(v: Any) -> str | None:
    """A non-empty string."""
    return None if isinstance(v, str) and v.strip() else "is required"


def plain_file_name(v: Any) -> str | None:
    """A file name without folders, so that outputs stay inside their folder."""
    if not isinstance(v, str) or not v or v in (".", "..") or Path(v).name != v or "\\" in v:
        return "must be a plain file name (no folders)"
    return None


def _changed(value: Any, default: Any, name: str) -> str:
    """The options that differ from their defaults, as flags (a nested group names its changed members)."""
    if isinstance(value, Options) and isinstance(default, Options):
        names = [flag(f.name) for f in fields(value) if getattr(value, f.name) != getattr(default, f.name)]
        return "/".join(names) or flag(name)
    return flag(name)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)


def max_threads() -> int:
    """The most threads or processes an option may ask for: four per core (more only makes their creation fail)."""
    return 4 * (os.cpu_count() or 1)


def threads(low: int = 1) -> Check:
    """A count of threads or worker processes: from ``low`` to :func:`max_threads`."""

    def check(v: Any) -> str | None:
        if not _finite(v) or v < low:
            return f"must be a number >= {low}"
        return None if v <= max_threads() else f"must be at most {max_threads()} (4 per core)"

    return check


@dataclass(frozen=True)
class Relation:
    """A check against other options of the same settings: ``value`` (a number, or a nested options group)
    may differ from its default only when option ``other`` is one of ``among`` (an option that would be
    ignored otherwise), and a number must stay below option ``below``."""

    other: str | None = None
    among: tuple[Any, ...] = ()
    below: str | None = None
    inner: Check | None = None

    def __call__(self, v: Any) -> str | None:
        return self.inner(v) if self.inner is not None and v is not None else None

    def cross(self, v: Any, default: Any, opts: "Options") -> str | None:
        """Why ``v`` does not fit the other options of ``opts``, or None."""
        if self.other is not None and v != default and getattr(opts, self.other) not in self.among:
            legal = ", ".join(map(str, self.among))
            return f"applies only with {flag(self.other)} {legal} (not {getattr(opts, self.other)})"
        if self.below is not None and v is not None and v >= getattr(opts, self.below):
            return f"must be below {flag(self.below)} {getattr(opts, self.below)} (it would never apply)"
        return None


def only_with(other: str, *among: Any, check: Check | None = None) -> Relation:
    """An option that means something only when option ``other`` is one of ``among``."""
    return Relation(other=other, among=among, inner=check)


def below(other: str, check: Check | None = None) -> Relation:
    """A number that must stay below option ``other``."""
    return Relation(below=other, inner=check)


OUTPUT_SUBFOLDERS = ("checkpoints", "runs", "tri_ppo_int_codes", "reports", "analysis", "activations", "export")


@dataclass(frozen=True)
class PathCheck:
    """The check of a path option: its value when the settings are made, the disk before a mode runs.

    ``kind`` is ``out_dir`` (a folder outputs go to; made when missing), ``in_file``, ``in_dir``,
    ``in_path`` (a file or a folder), ``out_file`` (a file to write) or ``out_name`` (a plain file
    name inside ``<option under[0]>/<under[1]>``). ``unless`` names a bool field that makes a
    missing input legal (``--download``); ``convert`` turns the value into a path (Windows spellings).
    """

    kind: str
    required: bool = False
    under: tuple[str, str] | None = None
    unless: str | None = None
    convert: Callable[[str], Path] | None = None

    def __call__(self, v: Any) -> str | None:
        if self.required and not (isinstance(v, str) and v.strip()):
            return "is required"
        if self.kind == "out_name":
            return plain_file_name(v)
        if isinstance(v, str) and "\0" in v:
            return "must not contain a NUL character"
        return None

    def on_disk(self, v: str, opts: "Options") -> str | None:
        """Why the path cannot be used as declared, or None."""
        if self.kind == "out_name":
            assert self.under is not None
            folder = Path(getattr(opts, self.under[0])) / self.under[1]
            return paths.file_problem(folder / v) if os.path.lexists(folder) else None
        p = self.convert(v) if self.convert is not None else Path(v)
        if self.kind == "out_dir":
            problem = paths.folder_problem(p)
            for sub in OUTPUT_SUBFOLDERS:
                if problem is None and os.path.lexists(p / sub):
                    inner = paths.folder_problem(p / sub)
                    problem = None if inner is None else f"cannot be used: {p / sub} {inner}"
            return problem
        if self.kind == "out_file":
            return paths.file_problem(p)
        if self.unless is not None and getattr(opts, self.unless) and not os.path.lexists(p):
            return None
        return paths.input_problem(p, {"in_file": False, "in_dir": True, "in_path": None}[self.kind])


def output_folder(required: bool = True) -> PathCheck:
    """A folder outputs are written to: writable, made when missing."""
    return PathCheck("out_dir", required=required)


def input_file(convert: Callable[[str], Path] | None = None, required: bool = False) -> PathCheck:
    """An existing readable file."""
    return PathCheck("in_file", required=required, convert=convert)


def input_folder(required: bool = False) -> PathCheck:
    """An existing folder."""
    return PathCheck("in_dir", required=required)


def input_path(unless: str | None = None) -> PathCheck:
    """An existing file or folder (missing is legal when the bool option ``unless`` is set)."""
    return PathCheck("in_path", unless=unless)


def output_file() -> PathCheck:
    """A file to write: not a folder, in a writable (or creatable) folder."""
    return PathCheck("out_file")


def output_name(folder_option: str, sub: str) -> PathCheck:
    """A plain file name written into ``<folder_option>/<sub>``."""
    return PathCheck("out_name", under=(folder_option, sub))


def option(default: Any = MISSING, help: str = "", *, check: Check | None = None,
           choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
           aliases: Sequence[str] = (), metavar: str | None = None, cli: bool = True,
           default_factory: Callable[[], Any] | None = None, positional: bool = False) -> Any:
    """A dataclass field with its help text, check, choices and CLI aliases.

    ``choices`` may be a callable (a registry's names, read when the CLI is built); ``cli=False``
    keeps a field out of the command line (set by the API or by the CLI code itself); ``positional``
    makes it also an argument without a flag (``triseg sweep SPEC``).
    """
    meta = {"help": help, "check": check, "choices": choices, "aliases": tuple(aliases), "metavar": metavar,
            "cli": cli, "positional": positional}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    """The legal values of a field, if it declares them."""
    c = f.metadata.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


@dataclass
class Options:
    """Base of every settings dataclass: values are checked when the object is made.

    ``cli_hidden`` names fields a mode does not use: the command line does not offer them.
    """

    cli_hidden: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line :class:`TrisegError` for the first illegal value."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Options):
                value.check()
                continue
            if value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
                raise TrisegError(f"{flag(f.name)} is out of range (at most {INT_MAX} in size), got {value}")
            legal = choices_of(f)
            if legal is not None and value not in legal:
                raise TrisegError(f"{flag(f.name)} {value!r} is unknown; choose one of {', '.join(map(str, legal))}")
            check = f.metadata.get("check")
            problem = check(value) if check is not None else None
            if problem:
                raise TrisegError(f"{flag(f.name)} {problem}" + ("" if value == "" else f", got {value!r}"))
        for f in fields(self):
            check = f.metadata.get("check")
            if isinstance(check, Relation):
                default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                problem = check.cross(getattr(self, f.name), default, self)
                if problem:
                    raise TrisegError(f"{_changed(getattr(self, f.name), default, f.name)} {problem}")

    def check_paths(self) -> None:
        """Raise a one-line :class:`TrisegError` for the first path option that cannot be used as declared
        (a missing input, an output folder that is a file or read-only, ...). Writes nothing."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Options):
                value.check_paths()
                continue
            check = f.metadata.get("check")
            if isinstance(check, PathCheck) and isinstance(value, str) and value:
                problem = check.on_disk(value, self)
                if problem:
                    raise TrisegError(f"{flag(f.name)} {value} {problem}")

    def replace(self, **changes: Any) -> "Options":
        """A copy with some fields changed (and checked)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (nested options as dicts), for result files and checkpoints."""
        return dataclasses.asdict(self)
