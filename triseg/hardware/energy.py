"""Energy per operation: an estimate from published 45 nm figures, overridable with a JSON table.

Default table (pJ per operation), Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, 45 nm, 0.9 V:

* ``mult8`` 0.2 pJ: an 8-bit integer multiply;
* ``add32`` 0.1 pJ: the 32-bit accumulation every non-skipped MAC does (a multiplied or a selected
  product is added to the accumulator);
* ``compare8`` 0.03 pJ: an 8-bit comparison at a tap, costed as Horowitz's 8-bit add (a comparator
  is a subtractor); a tri-segment map does three per activation (t1, t2, tmax);
* ``select`` 0.03 pJ: picking one of two precomputed 16-bit products w·v1, w·v2 held next to the
  weight. Horowitz gives no multiplexer figure; this assumes a 2:1 mux costs about an 8-bit add.
  Register reads are not counted: a weight-stationary array reads its weight register for a
  multiply as well.

These are estimates for comparing configurations, not a model of any chip. ``--cost-table
FILE.json`` replaces any of the four numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from triseg.errors import TrisegError
from triseg.paths import read_json

SOURCE = "Horowitz, ISSCC 2014, 45 nm (select: assumed equal to an 8-bit add)"
DEFAULT_TABLE: dict[str, Any] = {"mult8": 0.2, "add32": 0.1, "compare8": 0.03, "select": 0.03, "unit": "pJ",
                                 "source": SOURCE}
KEYS = ("mult8", "add32", "compare8", "select")


def energy_pj(table: dict[str, Any], multiplies: int, selects: int, comparisons: int) -> float:
    """Energy of ``multiplies`` multiply-accumulates, ``selects`` select-accumulates and the comparisons."""
    return (multiplies * (table["mult8"] + table["add32"]) + selects * (table["select"] + table["add32"])
            + comparisons * table["compare8"])


def load_table(path: str | Path) -> dict[str, Any]:
    """The default table with the numbers of a JSON file replacing its own (one-line errors)."""
    p = Path(path)
    obj = read_json(p, "cost table")
    if not isinstance(obj, dict):
        raise TrisegError(f"cost table {p} must be a JSON object with keys among {', '.join(KEYS)}")
    unknown = sorted(set(obj) - set(KEYS) - {"source", "unit"})
    if unknown:
        raise TrisegError(f"cost table {p}: unknown keys {unknown}; use {', '.join(KEYS)}")
    for key in KEYS:
        value = obj.get(key, DEFAULT_TABLE[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise TrisegError(f"cost table {p}: {key} must be a finite number >= 0 (pJ), got {value!r}")
    return {**DEFAULT_TABLE, **obj, "source": obj.get("source", f"{p} (over {SOURCE})")}
