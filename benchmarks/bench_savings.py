"""Wall time of one whole savings search job, and where it goes: calibration, the teacher's cached outputs,
the search episodes, and the selection on validation (Pareto front validated, hardware counted).

Runs ``triseg search --objective savings --dynamic-tmax`` through the public API on the real data with
the zoo's teacher, validation only (the test split is not opened).

    python benchmarks/bench_savings.py --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        [--model alexnet] [--search ladder] [--episodes 700] [--episode-images 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="alexnet")
    p.add_argument("--search", default="ladder")
    p.add_argument("--episodes", type=int, default=700)
    p.add_argument("--episode-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"{args.model} {args.search}, {args.episodes} episodes on {args.episode_images} training images, "
          f"{args.threads} threads, {machine.describe()}")
    with tempfile.TemporaryDirectory() as out:
        cfg = api.SearchConfig(model=args.model, search=args.search, episodes=args.episodes, seed=args.seed,
                               objective="savings", episode_images=args.episode_images, no_test=True,
                               data_dir=args.data_dir, output_dir=out, workers=args.threads,
                               space=api.SpaceOptions(dynamic_tmax=True))
        t0 = time.perf_counter()
        teacher = api.load_teacher(args.model, out)
        data = api.load_data(cfg)
        t1 = time.perf_counter()
        torch.set_num_threads(args.threads)
        space = api.build_space(teacher, data, cfg.space, cfg.batch_size, cfg.seed)
        t2 = time.perf_counter()
        result = api.run_search(cfg, teacher, data, space).result
        t3 = time.perf_counter()
    search, select = result.settings["search_wall_time_s"], result.settings["selection_wall_time_s"]
    rows = {"load teacher + data": t1 - t0, "calibration": t2 - t1, "search episodes": search,
            "selection on val": select, "teacher outputs + rest": (t3 - t2) - search - select}
    total = t3 - t1
    print("\n| phase | s | share |\n|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s:.1f} | {'' if name.startswith('load') else f'{s / total:.2f}'} |")
    print(f"| **search job (calibration to result)** | **{total:.1f}** | 1.00 |")
    hw = result.settings["hardware"]["totals"]
    print(f"\nchosen: val drop {result.validation.acc_drop:.2f}, multiplies left "
          f"{hw['multiplies_left_vs_zero_skipping_int8']:.4f} of zero-skipping INT8 (val), "
          f"{result.settings['student_evaluations']} evaluations")


if __name__ == "__main__":
    main()
