"""Throughput of every model on this CPU: training images/s (float32, and bfloat16 autocast as
``train_float --amp`` trains), and FP32, fake-quant (QAT) and INT8
inference images/s at batch 32 and 256, with the INT8 / fake-quant ratio measured in the same run.

Untrained models are fine for timing (the observers are calibrated on random batches first).

    python benchmarks/bench_pipeline.py [--models lenet5 alexnet ...] [--threads 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


def per_second(fn, images: int, min_time: float = 1.0, warmup: int = 1) -> float:
    """Images per second of ``fn`` (repeated for at least ``min_time`` seconds)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return n * images / elapsed


def bench_model(name: str, engine: str, min_time: float) -> dict[str, float]:
    """All throughputs of one model."""
    torch.manual_seed(0)
    model = api.build_model(name).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_train = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y_train = torch.randint(0, 10, (128,))

    def step(bf16: bool = False) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()

    row = {"train": per_second(step, 128, min_time), "train bf16": per_second(lambda: step(True), 128, min_time)}
    row["bf16/fp32"] = row["train bf16"] / row["train"]
    fp32 = api.build_model(name).eval()
    qat = api.qat_skeleton(name, "fbgemm")
    with torch.no_grad():
        for _ in range(3):
            qat(torch.randn(32, 3, 32, 32))
    qat.eval()
    int8 = api.convert_int8(qat, engine)
    with torch.no_grad():
        for batch in (32, 256):
            x = torch.randn(batch, 3, 32, 32)
            row[f"fp32@{batch}"] = per_second(lambda: fp32(x), batch, min_time)
            row[f"fakequant@{batch}"] = per_second(lambda: qat(x), batch, min_time)
            row[f"int8@{batch}"] = per_second(lambda: int8(x), batch, min_time)
            row[f"int8/fq@{batch}"] = row[f"int8@{batch}"] / row[f"fakequant@{batch}"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(api.MODELS))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--engine", default="x86", help="INT8 kernels (x86 or fbgemm)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cols = ["train", "train bf16", "bf16/fp32", "fp32@32", "fakequant@32", "int8@32", "int8/fq@32", "fp32@256",
            "fakequant@256", "int8@256", "int8/fq@256"]
    lines = [f"images/s, {args.threads} threads, INT8 engine {args.engine}, {machine.describe()}", "",
             "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in args.models:
        row = bench_model(name, args.engine, args.min_time)
        cells = [f"{row[c]:.1f}x" if "/" in c else f"{row[c]:.0f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        api.atomic_write_text(text + "\n", args.out)


if __name__ == "__main__":
    main()
