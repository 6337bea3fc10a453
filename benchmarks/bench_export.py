"""The ONNX / QONNX exports against the torch INT8 student: agreement on a whole split and images/s.

    python benchmarks/bench_export.py --data-dir /path/to/cifar10-jpg.tar.gz --threads 1 \\
        --models lenet5 alexnet --out results/export

For each model, the plain teacher and the student of its headline config (README) are exported with
every ONNX lowering (integer, qlinear, qdq) and the debug outputs, then run in onnxruntime with graph
optimisations off and on over the test split, each batch once, against two torch references: the
default x86 engine and fbgemm's kernels. The qonnx export runs in qonnx's ``execute_onnx`` on the
first ``--qonnx-images`` images. Speed: images/s of torch INT8 (the student as the search runs it)
and of onnxruntime (optimisations on, no debug outputs) at batch 1, 32 and 256, timed in alternating
blocks in one run so that the ratio is fair on a busy machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402
from triseg import api  # noqa: E402
from triseg.api import (EditOnlyRecorder, ExportRequest, LutEdit, QonnxRunner, compare, onnx_graph,  # noqa: E402
                        op_counts, optimised_ops, ort_runner, ort_session, qonnx_graph)

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")
ROOT = Path(__file__).resolve().parents[1]
HEADLINE = {"lenet5": "results/tmax_sweep/lenet5_ppo_p30.json", "alexnet": "results/tmax_sweep/alexnet_ppo_p70.json"}
BATCHES = (1, 32, 256)


def interleaved_images_per_s(fns: dict[str, Callable[[], Any]], batch: int, min_time: float,
                             blocks: int = 5) -> dict[str, float]:
    """Median images/s of each function, timed in alternating blocks of at least ``min_time / blocks`` s."""
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            calls, start = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time / blocks:
                    break
            rates[name].append(calls * batch / elapsed)
    return {name: statistics.median(r) for name, r in rates.items()}


@torch.no_grad()
def speed(teacher: api.Teacher, layers: dict, sessions: dict[str, Any], split: api.Split,
          min_time: float) -> dict[str, Any]:
    """Images/s of the torch student and of each onnxruntime session at batch 1, 32 and 256."""
    model = teacher.model
    previous = model.recorder
    api.attach(model, EditOnlyRecorder({model.tap_name(k): LutEdit(v) for k, v in layers.items()}))
    out: dict[str, Any] = {}
    try:
        for b in BATCHES:
            x = next(api.batches(split, b))[0]
            xn = x.numpy()
            fns: dict[str, Callable[[], Any]] = {"torch_int8": lambda x=x: model(x)}
            for name, s in sessions.items():
                fns[name] = lambda s=s, xn=xn: s.run(["logits"], {"input": xn})
            rates = interleaved_images_per_s(fns, b, min_time)
            out[str(b)] = {**rates, **{f"{k}_over_torch": v / rates["torch_int8"] for k, v in rates.items()
                                       if k != "torch_int8"}}
            print(f"    batch {b:3d}: " + ", ".join(f"{k} {v:8.1f} img/s" for k, v in rates.items()))
    finally:
        api.attach(model, previous)
    return out


def run_case(name: str, references: dict[str, api.Teacher], config_file: str | None, split: api.Split,
             args: argparse.Namespace) -> dict[str, Any]:
    """Agreement (every lowering x optimisation level x reference), qonnx agreement, op counts and speed."""
    teacher = references["x86"]
    config = teacher.load_config(config_file) if config_file else None
    layers = {} if config is None else config.layers
    req = ExportRequest(teacher, config, config_file, debug_taps=True)
    runners, plain, ops = {}, {}, {}
    for lowering in onnx_graph.ONNX_OPS:
        debug_model, _ = onnx_graph.build(req.graph, layers, lowering, debug_taps=True)
        model, _ = onnx_graph.build(req.graph, layers, lowering)
        data = onnx_graph.to_bytes(model)
        for level in ("off", "on"):
            runners[f"{lowering}/opt_{level}"] = ort_runner(ort_session(onnx_graph.to_bytes(debug_model), args.threads,
                                                                       optimize=level == "on"))
        plain[lowering] = ort_session(data, args.threads, optimize=True)
        ops[lowering] = {"file": op_counts(model), "optimised": optimised_ops(data, args.threads)}
    what = f"student ({config_file})" if config else "teacher"
    print(f"  {name} {what}: agreement on {len(split)} test images")
    start = time.perf_counter()
    stats = compare(references, config, runners, split, args.batch_size)
    agreement = {r: {ref: a.as_dict() for ref, a in s.items()} for r, s in stats.items()}
    for r, by_ref in agreement.items():
        print(f"    {r:18s} " + "  ".join(
            f"vs {ref}: top-1 {d['top1_agreement']:.3f} %, codes {min(d['equal_codes'].values()):.5f} % (min), "
            f"acc {d['accuracy_runtime']:.2f} %" for ref, d in by_ref.items()))
    print(f"    ({time.perf_counter() - start:.0f} s)")
    qsplit = split.take(args.qonnx_images)
    qmodel = qonnx_graph.build(req.graph, layers, debug_taps=True)
    qstats = compare(references, config, {"qonnx": QonnxRunner(qmodel, args.threads)}, qsplit, 100)["qonnx"]
    qonnx = {ref: a.as_dict() for ref, a in qstats.items()}
    print(f"    qonnx execute_onnx on {len(qsplit)} images: " + ", ".join(
        f"vs {ref}: top-1 {d['top1_agreement']:.2f} %, codes {min(d['equal_codes'].values()):.4f} % (min)"
        for ref, d in qonnx.items()))
    print("    images/s (onnxruntime optimisations on, no debug outputs):")
    return {"config": config_file, "images": len(split), "agreement": agreement,
            "qonnx": {"images": len(qsplit), "agreement": qonnx}, "ops": ops,
            "speed": speed(teacher, layers, {f"ort_{k}": v for k, v in plain.items()}, split, args.min_time)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", nargs="+", default=list(HEADLINE), choices=list(HEADLINE))
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--max-images", type=int, default=None, help="use only a class-stratified subset of N test images")
    p.add_argument("--qonnx-images", type=int, default=1000)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per runtime and batch size")
    p.add_argument("--out", default=str(ROOT / "results/export"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ort, onnx = api.require_extra("onnxruntime"), api.require_extra("onnx")
    api.require_extra("qonnx")
    env = {"machine": machine.describe(), "threads": args.threads, "onnxruntime": ort.__version__,
           "onnx": onnx.__version__, "qonnx": importlib.metadata.version("qonnx")}
    print(f"{env['machine']}; onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, qonnx {env['qonnx']}; "
          f"{args.threads} thread(s)")
    split = api.load_cifar10(args.data_dir).test.take(args.max_images)
    for name in args.models:
        references = {engine: api.load_teacher(name, device="cpu", engine=engine) for engine in ("fbgemm", "x86")}
        api.set_engine("x86")
        results = {"model": name, **env, "references": {"x86": "torch INT8, x86 engine (the default)",
                                                        "fbgemm": "torch INT8, fbgemm engine"},
                   "teacher": run_case(name, references, None, split, args),
                   "student": run_case(name, references, HEADLINE[name], split, args)}
        out = Path(args.out) / f"{name}.json"
        api.atomic_write_text(json.dumps(results, indent=1) + "\n", out)
        print(f"-> {out}")


if __name__ == "__main__":
    main()
