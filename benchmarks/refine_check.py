"""Does refining the maps at a fixed tmax buy accuracy? Measured on training and validation data only.

The ladder gives each layer the exact minimum-MSE map of its calibration histogram at each tmax. This
script takes the Pareto points of a savings result whose multiplies left lie in ``--left``, and runs
coordinate descent on (t1, v1, t2, v2) of every layer with tmax fixed (steps 1, 2, 4, 8; one layer's
code at a time; all candidates of a coordinate scored in one batched pass), minimising the distillation
loss on the result's fixed training slice (``--episode-images``, seeded as in the search). After each
sweep over all codes it validates the refined config on the whole validation split (drop and
multiplies left). The test split is never opened.

    python benchmarks/refine_check.py --data-dir ../shared/data/cifar10-jpg.tar.gz --model alexnet \\
        --config-path results/savings/alexnet/cells/<cell>/tri_ppo_int_codes/result.json
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace

import torch

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")
STEPS = (1, 2, 4, 8)
FIELDS = ("t1", "v1", "t2", "v2")


def neighbours(config: api.Config, layer: str, field: str) -> list[api.Config]:
    """Legal configs with one code of one layer moved by each step (tmax kept)."""
    cur, out = config[layer], []
    for step in STEPS:
        for value in (getattr(cur, field) - step, getattr(cur, field) + step):
            moved = replace(cur, **{field: value})
            codes = api.project(moved.t1, moved.v1, moved.t2, moved.v2, moved.tmax)
            if getattr(codes, field) == value and codes != cur:
                out.append({**config, layer: codes})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config-path", required=True, help="a savings result JSON (with pareto_front)")
    p.add_argument("--model", required=True)
    p.add_argument("--left", type=float, nargs=2, default=(0.025, 0.06), metavar=("LOW", "HIGH"))
    p.add_argument("--episode-images", type=int, default=1000)
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = api.SearchResult.read(args.config_path)
    seed = int(result.settings["seed"])
    cfg = api.SearchConfig(model=args.model, search="ladder", objective="savings", no_test=True, seed=seed,
                           episode_images=args.episode_images, data_dir=args.data_dir,
                           space=api.SpaceOptions(dynamic_tmax=True))
    teacher, data = api.load_teacher(args.model, "outputs"), api.load_data(cfg)
    evaluator = api.make_evaluator(teacher, data, cfg)
    base = api.count(teacher.model, {}, data.val, 500)
    base_acc, base_mult = base.accuracy(data.val.y), base.total("multiplied")
    print(machine.describe())

    def validate(config: api.Config) -> tuple[float, float]:
        counts = api.count(teacher.model, config, data.val, 500)
        return base_acc - counts.accuracy(data.val.y), counts.total("multiplied") / base_mult

    for point in result.settings["pareto_front"]:
        if not args.left[0] <= point["multiplies_left"] <= args.left[1]:
            continue
        config = {k: api.LayerCodes.from_json(k, v) for k, v in point["layers"].items()}
        best, evaluations, t0 = evaluator.score(config, 0).distill, 0, time.time()
        print(f"front point: multiplies left {point['multiplies_left']:.4f}, val drop {point['val_drop']:.2f}, "
              f"distill {best:.4f}")
        for sweep in range(args.sweeps):
            for layer in list(config):
                for field in FIELDS:
                    cands = neighbours(config, layer, field)
                    if not cands:
                        continue
                    scores = evaluator.score_many(cands, 0)
                    evaluations += len(cands)
                    i = min(range(len(cands)), key=lambda j: scores[j].distill)
                    if scores[i].distill < best:
                        best, config = scores[i].distill, cands[i]
            drop, left = validate(config)
            print(f"  sweep {sweep + 1}: distill {best:.4f} after {evaluations} evaluations "
                  f"({time.time() - t0:.0f} s): val drop {drop:.2f}, multiplies left {left:.4f}")


if __name__ == "__main__":
    main()
