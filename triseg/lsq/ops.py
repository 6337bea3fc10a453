"""The op kinds of an LSQ graph, and dispatch on them.

This module is the one list of kinds. The float net, the fake-quant net, the integer export and the
integer engine each interpret an op through a table built by :func:`op_table` (one handler per
kind, checked at import) and looked up with :func:`handler`, which names the op when its kind is
unknown. It imports nothing but :mod:`triseg.errors`, so the integer engine stays standalone.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from triseg.errors import TrisegError

KINDS: tuple[str, ...] = ("conv", "linear", "add", "maxpool", "avgpool")
LAYER_KINDS: tuple[str, ...] = ("conv", "linear")
POOL_KINDS: tuple[str, ...] = ("maxpool", "avgpool")

H = TypeVar("H")


def op_table(handlers: Mapping[str, H]) -> dict[str, H]:
    """``handlers`` as a dict, after checking that it covers exactly :data:`KINDS`."""
    if set(handlers) != set(KINDS):
        raise TypeError(f"an op table must handle exactly {KINDS}, got {tuple(handlers)}")
    return dict(handlers)


def handler(table: Mapping[str, H], kind: str, name: str) -> H:
    """The entry of ``table`` for ``kind``; a :class:`TrisegError` naming op ``name`` when unknown."""
    try:
        return table[kind]
    except KeyError:
        raise TrisegError(f"unknown op kind {kind!r} in op {name!r}; known kinds: {', '.join(KINDS)}") from None
