"""LSQ weight steps per tensor or per output channel: validation accuracy of the calibrated QAT model
before training and after a short fine-tune, from one float checkpoint (validation split only).

    python benchmarks/lsq_per_channel.py --float-checkpoint runs/lsq/resnet20/checkpoint.pt \
        --data-dir /path/to/cifar10 --bits 8,4,2 --steps 150 --json out.json

Every setting starts from the same float weights, calibration batch and data order. The fine-tune is
``lsq-qat``'s optimiser (SGD, Nesterov, cosine learning rate over ``--steps``, weight decay off the
steps) on augmented training batches; ``--steps 0`` measures the starting point only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402
from triseg.api import (atomic_write_text, batches, keep_steps_positive, load_cifar10,  # noqa: E402
                        load_lsq_checkpoint, lsq_model_from_checkpoint, to_qat)


def accuracy(net: torch.nn.Module, split, limit: int) -> float:
    """Top-1 (%) on a class-stratified subset of ``limit`` images of ``split``."""
    net.eval()
    correct = seen = 0
    with torch.no_grad():
        for x, y in batches(split.take(limit), 256):
            correct += (net(x).argmax(1) == y).sum().item()
            seen += len(y)
    return 100.0 * correct / seen


def run(ckpt: dict, data, bits: tuple[int, int], per_channel: bool, steps: int, lr: float, limit: int,
        keep_bn: bool = False, residual_bits: int | None = None, weight_init: str = "lsq",
        act_init: str = "lsq") -> dict:
    """One setting (weight bits, activation bits): calibrate, measure, fine-tune ``steps`` batches, measure again."""
    torch.manual_seed(0)
    net = to_qat(lsq_model_from_checkpoint(ckpt), *bits, 8, per_channel, keep_bn, residual_bits, weight_init, act_init)
    train = itertools.chain.from_iterable(
        batches(data.train, 128, shuffle=True, augment_data=True, gen=torch.Generator().manual_seed(e))
        for e in itertools.count())
    net.eval()  # calibration as lsq-qat does it (a kept BN keeps its running statistics)
    with torch.no_grad():
        net(next(iter(batches(data.train, 128, shuffle=True, augment_data=True,
                              gen=torch.Generator().manual_seed(0))))[0])
    row = {"w_bits": bits[0], "a_bits": bits[1], "per_channel_weights": per_channel, "keep_bn": keep_bn,
           "residual_bits": net.meta["residual_bits"], "weight_step_init": weight_init, "act_step_init": act_init,
           "calibrated_val_top1": accuracy(net, data.val, limit)}
    if steps:
        opt = torch.optim.SGD(net.param_groups(1e-4), lr=lr, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        t0 = time.perf_counter()
        net.train()
        for x, y in itertools.islice(train, steps):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            keep_steps_positive(net)
            sched.step()
        row.update(steps=steps, lr=lr, tuned_val_top1=accuracy(net, data.val, limit),
                   tune_s=round(time.perf_counter() - t0, 1))
    print(f"W{bits[0]}A{bits[1]} {'per-channel' if per_channel else 'per-tensor '}"
          f"{' keep-bn' if keep_bn else ''} residual {row['residual_bits']} steps {weight_init}/{act_init}: calibrated "
          f"{row['calibrated_val_top1']:6.2f} %" + (f", after {steps} steps {row['tuned_val_top1']:6.2f} %"
                                                    if steps else ""), flush=True)
    return row


def parse_bits(token: str) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"2:8"`` -> (2, 8)."""
    w, _, a = token.partition(":")
    return int(w), int(a or w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float-checkpoint", required=True, help="checkpoint.pt from lsq-train")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (default $TRISEG_DATA_DIR or the bundled sample)")
    p.add_argument("--bits", default="8,4,2", help="bit widths: N (weights and activations) or W:A, comma-separated")
    p.add_argument("--steps", type=int, default=0, help="fine-tuning batches of 128 per setting")
    p.add_argument("--lr", type=float, default=0.001, help="peak learning rate (lsq-qat's default)")
    p.add_argument("--val-images", type=int, default=2000, help="validation images measured (class-stratified)")
    p.add_argument("--weight-steps", choices=("both", "tensor", "channel"), default="both",
                   help="weight steps per tensor, per output channel, or both (one row each)")
    p.add_argument("--keep-bn", action="store_true", help="lsq-qat --keep-bn for every setting")
    p.add_argument("--residual-bits", type=int, default=None, help="lsq-qat --residual-bits for every setting")
    p.add_argument("--weight-step-init", default="lsq", help="lsq-qat --weight-step-init: one rule, or a "
                                                              "comma-separated list (one row each)")
    p.add_argument("--act-step-init", default="lsq", help="lsq-qat --act-step-init: one rule, or a list")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_lsq_checkpoint(args.float_checkpoint)
    data = load_cifar10(args.data_dir)
    print(f"{args.float_checkpoint}: {args.val_images} validation images, {args.threads} thread(s), "
          f"{machine.describe()}")
    rows = [run(ckpt, data, b, pc, args.steps, args.lr, args.val_images, args.keep_bn, args.residual_bits, wi, ai)
            for b in (parse_bits(v) for v in args.bits.split(","))
            for pc in {"both": (False, True), "tensor": (False,), "channel": (True,)}[args.weight_steps]
            for wi in args.weight_step_init.split(",") for ai in args.act_step_init.split(",")]
    if args.json:
        atomic_write_text(json.dumps({"machine": machine.describe(), "rows": rows}, indent=2) + "\n", args.json)


if __name__ == "__main__":
    main()
