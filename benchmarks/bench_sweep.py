"""Sweep wall time: the same 12-cell LeNet-5 grid one cell at a time in-process and as Ray tasks, 2 at once.

Both runs use the same seeds, so every cell must choose the same maps with the same validation drop;
the ratio of the two wall times is measured within one run of this script.

    python benchmarks/bench_sweep.py --data-dir PATH/cifar10-jpg.tar.gz --out results/sweep/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triseg import api, sweep  # noqa: E402

SPEC = """output = "{out}"
models = ["lenet5"]
strategies = ["random", "cmaes", "exact-mse", "greedy"]
seeds = [0, 1, 2]
budgets = [{budget}]
options = {options}
"""


def outcome(cell: sweep.Cell) -> dict:
    """The chosen maps and validation drop of a finished cell."""
    result = sweep.finished(cell)
    assert result is not None, cell.name
    return {"config": {k: vars(c) for k, c in result.config.items()}, "val_drop": result.validation.acc_drop}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (default: $TRISEG_DATA_DIR, else the tiny sample)")
    p.add_argument("--out", default="results/sweep/bench")
    p.add_argument("--budget", type=int, default=200, help="student evaluations per cell (default 200)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--calib-batches", type=int, default=4)
    a = p.parse_args()
    import ray

    out = Path(a.out)
    options = ["--top-k", str(a.top_k), "--calib-batches", str(a.calib_batches),
               *(["--data-dir", a.data_dir] if a.data_dir else [])]
    specs = {}
    for name in ("sequential", "ray2"):
        path = out / name / "spec.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        api.atomic_write_text(SPEC.format(out=out / name, budget=a.budget, options=json.dumps(options)), path)
        specs[name] = sweep.load_spec(path)
    times = {}
    t0 = time.time()
    sweep.run_sweep(specs["sequential"], use_ray=False)
    times["sequential"] = time.time() - t0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.time()
        sweep.run_sweep(specs["ray2"], max_parallel=2, use_ray=True)
        times["ray2"] = time.time() - t0
    finally:
        ray.shutdown()
    same = [outcome(c) == outcome(d) for c, d in zip(specs["sequential"].cells, specs["ray2"].cells)]
    report = {"cells": len(same), "budget": a.budget, "options": options, "wall_time_s": times,
              "speedup_2_parallel": times["sequential"] / times["ray2"], "same_results": sum(same),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                          "load_1min": os.getloadavg()[0]}}
    api.atomic_write_text(json.dumps(report, indent=2) + "\n", out / "bench.json")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
