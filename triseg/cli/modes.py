"""The mode registry: every subcommand, its settings dataclass and the function that runs it.

The table is explicit (no registration by import side effects): adding a mode is one function in a
``triseg/cli/<topic>.py`` module and one row in that module's ``MODES`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from triseg.options import Options


@dataclass(frozen=True)
class Mode:
    """One subcommand: its help, its settings dataclass and its runner."""

    name: str
    help: str
    config: type[Options]
    run: Callable[[Any], None]


def all_modes() -> dict[str, Mode]:
    """Every mode, in the order ``--help`` lists them."""
    from triseg.cli import analysis, export, lsq, pipeline, search, supervised, sweep, zoo

    return {m.name: m for module in (pipeline, search, supervised, zoo, analysis, lsq, export, sweep)
            for m in module.MODES}
