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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from triseg.errors import TrisegError

Check = Callable[[Any], "str | None"]


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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)


def option(default: Any = MISSING, help: str = "", *, check: Check | None = None,
           choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
           aliases: Sequence[str] = (), metavar: str | None = None, cli: bool = True,
           default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its help text, check, choices and CLI aliases.

    ``choices`` may be a callable (a registry's names, read when the CLI is built); ``cli=False``
    keeps a field out of the command line (set by the API or by the CLI code itself).
    """
    meta = {"help": help, "check": check, "choices": choices, "aliases": tuple(aliases), "metavar": metavar,
            "cli": cli}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    """The legal values of a field, if it declares them."""
    c = f.metadata.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


@dataclass
class Options:
    """Base of every settings dataclass: values are checked when the object is made."""

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
            legal = choices_of(f)
            if legal is not None and value not in legal:
                raise TrisegError(f"{flag(f.name)} {value!r} is unknown; choose one of {', '.join(map(str, legal))}")
            check = f.metadata.get("check")
            problem = check(value) if check is not None else None
            if problem:
                raise TrisegError(f"{flag(f.name)} {problem}" + ("" if value == "" else f", got {value!r}"))

    def replace(self, **changes: Any) -> "Options":
        """A copy with some fields changed (and checked)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (nested options as dicts), for result files and checkpoints."""
        return dataclasses.asdict(self)
