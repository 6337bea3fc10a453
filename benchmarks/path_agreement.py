"""Agreement of the two execution paths of the student on a whole split: the real INT8 model with
LUT edits (CPU kernels) against the integer simulation with the float-path edits.

    python benchmarks/path_agreement.py --model lenet5 --config-path results/ppo/lenet5_ppo_result.json \
        --data-dir /path/to/cifar10-jpg.tar.gz [--engine fbgemm]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--config-path", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--engine", default=None)
    p.add_argument("--split", default="test", choices=["val", "test"])
    args = p.parse_args()
    teacher = api.load_teacher(args.model, "outputs", args.engine, device="cpu")
    int8 = teacher.model
    sim = api.simulate(int8)
    cfg = teacher.load_config(args.config_path)
    split = getattr(api.load_cifar10(args.data_dir), args.split)
    taps = [int8.tap_name(layer) for layer in cfg.layers]
    same_top1, equal_codes, total_codes = 0, dict.fromkeys(taps, 0), dict.fromkeys(taps, 0)
    for x, _ in api.batches(split, 250):
        rec_a = api.install(int8, cfg.layers, keep=set(taps))
        rec_b = api.install(sim, cfg.layers, keep=set(taps))
        same_top1 += int((int8(x).argmax(1) == sim(x).argmax(1)).sum())
        for t in taps:
            a, b = rec_a.records[t].codes, rec_b.records[t].codes
            equal_codes[t] += int((a == b).sum())
            total_codes[t] += a.numel()
    api.attach(int8, None)
    api.attach(sim, None)
    print(f"{args.model} ({torch.backends.quantized.engine} kernels) vs integer simulation, {args.split} split, "
          f"{len(split)} images, config {args.config_path}")
    print(f"top-1 agreement: {100 * same_top1 / len(split):.3f} %")
    for t in taps:
        print(f"  {t}: {100 * equal_codes[t] / total_codes[t]:.4f} % of codes equal")


if __name__ == "__main__":
    main()
