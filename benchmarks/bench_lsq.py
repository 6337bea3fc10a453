"""Integer-only LSQ inference against the fake-quant model (and the float model): images/s on this CPU.

    python benchmarks/bench_lsq.py --checkpoint runs/lsq/resnet_cifar10-w4a4/checkpoint.pt \
        --data-dir /path/to/cifar10 --threads 1

Without ``--checkpoint`` it times freshly calibrated models for every ``--bits`` setting. All numbers
printed come from one run, measured with ``torch.utils.benchmark`` on the same batch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402
from triseg.api import (IntegerModel, QuantNet, atomic_write_text, batches, build_lsq_model,  # noqa: E402
                        export_integer, load_cifar10, load_lsq_checkpoint, lsq_model_from_checkpoint, to_qat)


def images_per_s(fn, x: torch.Tensor, min_time: float) -> float:
    """Median throughput of ``fn(x)`` over repeated blocks of at least ``min_time`` seconds."""
    with torch.no_grad():
        fn(x)
        m = benchmark.Timer("fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads()) \
            .blocked_autorange(min_run_time=min_time)
    return len(x) / m.median


def time_pair(name: str, net: QuantNet, x: torch.Tensor, min_time: float) -> dict:
    """Fake-quant and integer-engine throughput for one model, on the same batch."""
    net.eval()
    engine = IntegerModel(export_integer(net, tuple(x.shape[1:])))
    fq = images_per_s(net, x, min_time)
    it = images_per_s(engine.run, x, min_time)
    row = {"model": name, "fake_quant_img_s": fq, "integer_img_s": it, "integer_over_fake_quant": it / fq}
    print(f"{name:32s} fake-quant {fq:8.1f} img/s   integer {it:8.1f} img/s   integer/fake-quant {it / fq:5.2f}x")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", default=[], help="QAT checkpoint(s) from lsq-qat")
    p.add_argument("--float-checkpoint", default=None, help="also time this float model (lsq-train)")
    p.add_argument("--model", default="resnet_cifar10", help="model for the calibrated-only runs")
    p.add_argument("--bits", default="8,4,2", help="W=A bit widths for the calibrated-only runs")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (default $TRISEG_DATA_DIR or the bundled sample)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=5.0, help="seconds of timing per measurement")
    p.add_argument("--json", default=None, help="write the measurements here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_cifar10(args.data_dir, val_size=0)
    x, _ = next(iter(batches(data.test, args.batch_size)))
    print(f"batch {len(x)}, {args.threads} thread(s), {machine.describe()}")
    rows = []
    if args.float_checkpoint:
        net = lsq_model_from_checkpoint(load_lsq_checkpoint(args.float_checkpoint)).eval()
        fl = images_per_s(net, x, args.min_time)
        print(f"{'float (conv + BN)':32s} float      {fl:8.1f} img/s")
        rows.append({"model": "float", "float_img_s": fl})
    for path in args.checkpoint:
        ckpt = load_lsq_checkpoint(path)
        meta = ckpt["meta"]
        rows.append(time_pair(f"{meta['model']} W{meta['w_bits']}A{meta['a_bits']} ({Path(path).parent.name})",
                              lsq_model_from_checkpoint(ckpt), x, args.min_time))
    if not args.checkpoint:
        for b in (int(v) for v in args.bits.split(",")):
            net = to_qat(build_lsq_model(args.model), b, b)
            net.train()
            with torch.no_grad():
                net(x)
            rows.append(time_pair(f"{args.model} W{b}A{b} (calibrated)", net, x, args.min_time))
    if args.json:
        out = {"batch": len(x), "threads": args.threads, "machine": machine.describe(), "rows": rows}
        atomic_write_text(json.dumps(out, indent=2) + "\n", args.json)


if __name__ == "__main__":
    main()
