"""Command-line options generated from the job dataclasses (:mod:`triseg.jobs`).

Each :func:`triseg.options.option` field becomes ``--field-name`` (plus its aliases) with its help and
default; a nested options dataclass becomes an option group with the same flat names. Values are
checked when the dataclass is built, so the CLI and the Python API reject the same inputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar

from triseg.options import Options, choices_of, flag

T = TypeVar("T", bound=Options)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one ``error:`` line, without the usage block."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _base_type(tp: Any) -> Any:
    """``int`` for ``int | None`` and ``Optional[int]``; the type itself otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a settings class, computed once."""
    return typing.get_type_hints(cls)


def _is_options(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Options)


def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata.get("help", "")
    legal = choices_of(f)
    if legal is not None:
        text += f"; one of {', '.join(legal)}"
    shown = not (default is None or default is False or default == "" or isinstance(default, list))
    if shown:
        text += f" (default {default})"
    return text.replace("%", "%%")


def offered(cls: type[Options], f: dataclasses.Field) -> bool:
    """Whether the command line of ``cls`` offers field ``f`` (not ``cli=False``, not in ``cls.cli_hidden``)."""
    return f.metadata.get("cli", True) and f.name not in cls.cli_hidden


def _add_field(group: Any, f: dataclasses.Field, tp: Any, dest: str) -> None:
    names = [flag(f.name), *f.metadata.get("aliases", ())]
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    if f.metadata.get("positional"):  # also given as the flag below
        group.add_argument(dest, nargs="?", default=argparse.SUPPRESS, help=f"same as {names[0]}",
                           metavar=f.metadata.get("metavar") or f.name.upper())
    kwargs: dict[str, Any] = {"dest": dest, "help": _help(f, default), "default": default}
    base = _base_type(tp)
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
    elif typing.get_origin(base) is list:
        kwargs.update(action="append", default=None)
    else:
        kwargs.update(type=base, metavar=f.metadata.get("metavar") or f.name.upper())
    group.add_argument(*names, **kwargs)


def add_options(parser: argparse.ArgumentParser, cls: type[Options]) -> None:
    """Add an option for every field of ``cls``: the job's own fields first, the shared ones after."""
    hints = type_hints(cls)
    own = set(cls.__dict__.get("__annotations__", {}))
    mode_group = parser.add_argument_group(f"{parser.prog.split()[-1]} options")
    common = parser.add_argument_group("common options")
    for f in dataclasses.fields(cls):
        if not offered(cls, f):
            continue
        tp = hints[f.name]
        if _is_options(tp):
            group = parser.add_argument_group(f.metadata.get("help") or f.name)
            sub_hints = type_hints(tp)
            for sub in dataclasses.fields(tp):
                _add_field(group, sub, sub_hints[sub.name], f"{f.name}.{sub.name}")
        else:
            _add_field(mode_group if f.name in own else common, f, tp, f.name)


def build_options(cls: type[T], ns: argparse.Namespace) -> T:
    """The dataclass ``cls`` from parsed options (checked on construction)."""
    values = vars(ns)
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not offered(cls, f):
            continue
        tp = hints[f.name]
        if _is_options(tp):
            kwargs[f.name] = tp(**{sub.name: values[f"{f.name}.{sub.name}"] for sub in dataclasses.fields(tp)})
        elif f.name in values:
            value = values[f.name]
            if value is None and typing.get_origin(_base_type(tp)) is list:
                value = []
            kwargs[f.name] = value
    return cls(**kwargs)


def parse_options(cls: type[T], argv: list[str], prog: str = "options") -> T:
    """The dataclass ``cls`` from CLI-style options (e.g. ``["--model", "lenet5", "--tmax-percentile", "30"]``)."""
    parser = OneLineParser(prog=prog, add_help=False)
    add_options(parser, cls)
    return build_options(cls, parser.parse_args(argv))
