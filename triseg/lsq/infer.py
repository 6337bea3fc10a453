"""``lsq-infer``: integer-only evaluation, and its agreement with the fake-quant model."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from triseg.artifacts import write_json
from triseg.errors import TrisegError
from triseg.lsq.integer import IntegerModel, export_integer
from triseg.lsq.qat import QuantNet
from triseg.lsq.train import load_lsq_checkpoint, make_source, model_from_checkpoint

if TYPE_CHECKING:
    from triseg.jobs import LsqInferConfig


class _Agreement:
    """Per-layer counts of equal codes and the largest difference."""

    def __init__(self) -> None:
        self.equal: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.max: dict[str, int] = {}

    def add(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        diff = (a - b).abs()
        self.equal[name] = self.equal.get(name, 0) + (diff == 0).sum().item()
        self.total[name] = self.total.get(name, 0) + diff.numel()
        self.max[name] = max(self.max.get(name, 0), int(diff.max()))

    def pct(self) -> dict[str, float]:
        return {k: 100.0 * self.equal[k] / self.total[k] for k in self.equal}


class _Versus:
    """One fake-quant reference against the integer engine: accuracy, top-1 agreement, equal logits and
    per-layer code agreement."""

    def __init__(self, net: QuantNet, dtype: torch.dtype) -> None:
        self.net, self.dtype = net, dtype
        self.correct = self.agree = self.equal_rows = self.equal_logits = self.logits_total = 0
        self.max_logit_diff = 0
        self.seconds = 0.0
        self.chained, self.local = _Agreement(), _Agreement()

    def add(self, x: torch.Tensor, y: torch.Tensor, engine: IntegerModel, int_logits: torch.Tensor,
            record: dict[str, torch.Tensor]) -> None:
        """Run the reference on ``x`` (timed) and compare it with the engine's logits and codes."""
        t0 = time.perf_counter()
        env = self.net.trace(x.to(self.dtype))
        self.seconds += time.perf_counter() - t0
        codes = {name: (env[name][0] / env[name][1]).round().long() for name in self.net.acts}
        forced: dict[str, torch.Tensor] = {}
        engine.run(x, forced, feed=codes)
        for name, c in codes.items():
            self.chained.add(name, c, record[name])
            self.local.add(name, c, forced[name])
        logits = env[self.net.ops[-1].name][0]
        units = (logits.double() / engine.logit_scale).round().long()
        pred = logits.argmax(1)
        self.correct += (pred == y).sum().item()
        self.agree += (pred == int_logits.argmax(1)).sum().item()
        same = units == int_logits
        self.equal_logits += same.sum().item()
        self.equal_rows += same.all(1).sum().item()
        self.logits_total += same.numel()
        self.max_logit_diff = max(self.max_logit_diff, int((units - int_logits).abs().max()))

    def report(self, n: int, suffix: str = "") -> dict:
        """The counts as percentages; ``suffix`` is appended to every key."""
        out = {
            "fake_quant_top1": 100.0 * self.correct / n,
            "top1_agreement": 100.0 * self.agree / n,
            "equal_logits_pct": 100.0 * self.equal_logits / self.logits_total,
            "images_with_all_logits_equal_pct": 100.0 * self.equal_rows / n,
            "max_logit_diff_acc_units": self.max_logit_diff,
            "min_layer_code_agreement_pct": min(self.chained.pct().values()),
            "max_layer_code_diff": max(self.chained.max.values()),
            "min_local_layer_code_agreement_pct": min(self.local.pct().values()),
            "max_local_layer_code_diff": max(self.local.max.values()),
            "layer_code_agreement_pct": self.chained.pct(),
            "local_layer_code_agreement_pct": self.local.pct(),
        }
        return {k + suffix: v for k, v in out.items()}


@torch.no_grad()
def compare(net: QuantNet, engine: IntegerModel, batches) -> dict:
    """Accuracy of both models, top-1 agreement, equal logits and per-layer code agreement.

    Per-layer agreement is measured twice: ``chained`` (each model runs on its own codes, so one
    rounding-boundary difference propagates to later layers) and ``local`` (every layer of the
    engine starts from the fake-quant model's input codes, isolating that layer's arithmetic).
    The fake-quant model is run as trained (float32, the plain keys) and in float64 (keys ending
    ``_float64``): float32 rounds a value near a code boundary to either side, float64 computes the
    model's definition to ~1e-16, so the ``_float64`` keys measure the engine's own arithmetic.
    """
    net.eval()
    refs = {"": _Versus(net, torch.float32), "_float64": _Versus(copy.deepcopy(net).double(), torch.float64)}
    n = int_correct = 0
    int_time = 0.0
    for x, y in batches:
        t0 = time.perf_counter()
        record: dict[str, torch.Tensor] = {}
        int_logits = engine.run(x, record)
        int_time += time.perf_counter() - t0
        for ref in refs.values():
            ref.add(x, y, engine, int_logits, record)
        n += len(y)
        int_correct += (int_logits.argmax(1) == y).sum().item()
    if n == 0:
        raise TrisegError("no images to evaluate")
    report = {"images": n, "integer_top1": 100.0 * int_correct / n}
    for suffix, ref in refs.items():
        report.update(ref.report(n, suffix))
    return {**report, "fake_quant_images_per_s": n / refs[""].seconds, "integer_images_per_s": n / int_time}


@torch.no_grad()
def integer_accuracy(engine: IntegerModel, batches) -> dict:
    """Top-1 accuracy of the integer engine alone."""
    n = correct = 0
    for x, y in batches:
        correct += (engine.run(x).argmax(1) == y).sum().item()
        n += len(y)
    if n == 0:
        raise TrisegError("no images to evaluate")
    return {"images": n, "integer_top1": 100.0 * correct / n}


def run_infer(cfg: LsqInferConfig) -> dict:
    """Evaluate an integer model, or export a QAT checkpoint and compare both engines."""
    inputs = [Path(p).resolve() for p in (cfg.checkpoint, cfg.int_model) if p]
    for flag, out in (("--export", cfg.export), ("--json", cfg.json)):
        if out and Path(out).resolve() in inputs:
            raise TrisegError(f"{flag} {out} would overwrite the model it reads: choose another file")
    if cfg.export and cfg.json and Path(cfg.export).resolve() == Path(cfg.json).resolve():
        raise TrisegError("--export and --json name the same file: choose two files")
    source = make_source(cfg, cfg.batch_size)
    if cfg.checkpoint:
        ckpt = load_lsq_checkpoint(cfg.checkpoint)
        if ckpt["kind"] != "qat":
            raise TrisegError(f"{cfg.checkpoint} is a float checkpoint; lsq-infer needs lsq-qat's")
        net = model_from_checkpoint(ckpt)
        x, _ = next(iter(source.evaluate(cfg.split)))
        engine = IntegerModel(export_integer(net, tuple(x.shape[1:]), cfg.export))
        report = {"checkpoint": str(cfg.checkpoint), **compare(net, engine, source.evaluate(cfg.split))}
    elif cfg.int_model:
        engine = IntegerModel.load(cfg.int_model)
        report = {"int_model": str(cfg.int_model), **integer_accuracy(engine, source.evaluate(cfg.split))}
    else:
        raise TrisegError("lsq-infer needs exactly one of --checkpoint (QAT) and --int-model")
    report = {"split": cfg.split, **engine.meta, **report}
    for key in ("fake_quant_top1", "integer_top1", "top1_agreement", "top1_agreement_float64", "equal_logits_pct",
                "equal_logits_pct_float64", "min_layer_code_agreement_pct", "min_layer_code_agreement_pct_float64",
                "min_local_layer_code_agreement_pct"):
        if key in report:
            print(f"{key}: {report[key]:.3f}")
    if cfg.json:
        write_json(report, Path(cfg.json))
    return report
