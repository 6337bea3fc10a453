"""How large a safety margin the savings selection needs, measured on the validation split alone.

The savings selection picks, among the validated Pareto front of a result, the config with the fewest
multiplies left whose validation drop is within ``limit - margin``. Picking the best of many noisy
estimates is optimistic: the chosen config's drop on new images is larger than on the images it was
chosen on. This script measures that with split halves of the validation split: for each of
``--splits`` random halves A/B, select on A with each margin, and read the chosen config's drop on B.
It reports, per margin, the mean multiplies left chosen, the mean optimism (drop on B - drop on A) and
how often the drop on B exceeds the limit (``api.split_half_risk``, what ``--margin-risk`` uses inside
the selection). The test split is never opened.

    python benchmarks/margin_check.py --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        --config-path results/savings/lenet5/cells/<cell>/tri_ppo_int_codes/result.json --model lenet5
"""

from __future__ import annotations

import argparse
import warnings

import torch

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config-path", required=True, help="a savings result JSON (with pareto_front)")
    p.add_argument("--model", required=True)
    p.add_argument("--max-acc-drop", type=float, default=2.0)
    p.add_argument("--splits", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = api.SearchResult.read(args.config_path)
    front = result.settings["pareto_front"]
    teacher = api.load_teacher(args.model, "outputs")
    val = api.load_cifar10(args.data_dir).val
    print(f"{args.config_path}: {len(front)} front points, {len(val)} validation images, {machine.describe()}")
    correct_t = api.evaluate_student(teacher.model, {}, val, 500, coverage=False).predictions.eq(val.y)
    correct, lefts = [], []
    for point in front:
        config = {k: api.LayerCodes.from_json(k, v) for k, v in point["layers"].items()}
        correct.append(api.evaluate_student(teacher.model, config, val, 500, coverage=False).predictions.eq(val.y))
        lefts.append(point["multiplies_left"])
    rows = api.split_half_risk(correct_t, torch.stack(correct), torch.tensor(lefts), args.max_acc_drop, args.splits)
    print(f"\nlimit {args.max_acc_drop} points; selection on half A, read on half B ({args.splits} splits)\n")
    print("| margin | multiplies left chosen (mean) | optimism B - A (mean) | share of splits with drop on B > limit |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['margin']:g} | {r['multiplies_left']:.4f} | {r['optimism']:.2f} | {r['over_limit']:.3f} |")


if __name__ == "__main__":
    main()
