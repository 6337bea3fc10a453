"""Does a sweep reproduce a committed search_compare.py grid? Cell by cell: the chosen maps and the validation drop.

search_compare.py is retired; its results (``<strategy>__seed<seed>.json``) stay under ``results/compare/``.

    python benchmarks/sweep_match.py examples/sweep_lenet5.toml results/compare/lenet5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triseg import api, sweep  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec", help="the sweep's spec")
    p.add_argument("compare", help="folder of <strategy>__seed<seed>.json results (the retired search_compare.py's "
                                   "layout)")
    a = p.parse_args()
    spec = sweep.load_spec(a.spec)
    rows, same = [], 0
    for cell in spec.cells:
        ours = sweep.finished(cell)
        model, strategy, _, _, _, seed = cell.name.split("__")
        theirs_path = Path(a.compare) / f"{strategy}__{seed}.json"
        if ours is None or not theirs_path.is_file():
            rows.append({"cell": cell.name, "match": None})
            continue
        theirs = api.SearchResult.read(theirs_path)
        same_maps = ours.config == theirs.config
        match = same_maps and abs(ours.validation.acc_drop - theirs.validation.acc_drop) < 1e-9
        same += match
        rows.append({"cell": cell.name, "match": match, "same_maps": same_maps, "val_drop": ours.validation.acc_drop,
                     "committed_val_drop": theirs.validation.acc_drop})
        verdict = "same maps and drop" if match else ("same maps, other drop" if same_maps else "other maps")
        print(f"{cell.name}: val drop {ours.validation.acc_drop:.2f} vs committed "
              f"{theirs.validation.acc_drop:.2f} -> {verdict}")
    report = {"spec": a.spec, "compare": a.compare, "cells": len(spec.cells), "same": same, "rows": rows}
    api.atomic_write_text(json.dumps(report, indent=2) + "\n", spec.output / "match.json")
    print(f"{same} of {len(spec.cells)} cells match -> {spec.output / 'match.json'}")


if __name__ == "__main__":
    main()
