"""``lsq-infer``: integer-only evaluation, and its agreement with the fake-quant model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from triseg.artifacts import write_json
from triseg.errors import TrisegError
from triseg.lsq.integer import IntegerModel, export_integer
from triseg.lsq.qat import QuantNet
from triseg.lsq.train import load_checkpoint, make_source, model_from_checkpoint

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


@torch.no_grad()
def compare(net: QuantNet, engine: IntegerModel, batches) -> dict:
    """Accuracy of both models, top-1 agreement, equal logits and per-layer code agreement.

    Per-layer agreement is measured twice: ``chained`` (each model runs on its own codes, so one
    rounding-boundary difference propagates to later layers) and ``local`` (every layer of the
    engine starts from the fake-quant model's input codes, isolating that layer's arithmetic).
    """
    net.eval()
    last = net.ops[-1].name
    n = fq_correct = int_correct = agree = equal_rows = equal_logits = logits_total = 0
    max_logit_diff = 0
    chained, local = _Agreement(), _Agreement()
    fq_time = int_time = 0.0
    for x, y in batches:
        t0 = time.perf_counter()
        env = net.trace(x)
        t1 = time.perf_counter()
        record: dict[str, torch.Tensor] = {}
        int_logits = engine.run(x, record)
        int_time += time.perf_counter() - t1
        fq_time += t1 - t0
        fq_codes = {name: (env[name][0] / env[name][1]).round().long() for name in net.acts}
        forced: dict[str, torch.Tensor] = {}
        engine.run(x, forced, feed=fq_codes)
        for name, codes in fq_codes.items():
            chained.add(name, codes, record[name])
            local.add(name, codes, forced[name])
        fq_logits = env[last][0]
        fq_acc_units = (fq_logits.double() / engine.logit_scale).round().long()
        fq_pred, int_pred = fq_logits.argmax(1), int_logits.argmax(1)
        n += len(y)
        fq_correct += (fq_pred == y).sum().item()
        int_correct += (int_pred == y).sum().item()
        agree += (fq_pred == int_pred).sum().item()
        same = fq_acc_units == int_logits
        equal_logits += same.sum().item()
        equal_rows += same.all(1).sum().item()
        logits_total += same.numel()
        max_logit_diff = max(max_logit_diff, int((fq_acc_units - int_logits).abs().max()))
    if n == 0:
        raise TrisegError("no images to evaluate")
    return {
        "images": n,
        "fake_quant_top1": 100.0 * fq_correct / n,
        "integer_top1": 100.0 * int_correct / n,
        "top1_agreement": 100.0 * agree / n,
        "equal_logits_pct": 100.0 * equal_logits / logits_total,
        "images_with_all_logits_equal_pct": 100.0 * equal_rows / n,
        "max_logit_diff_acc_units": max_logit_diff,
        "min_layer_code_agreement_pct": min(chained.pct().values()),
        "max_layer_code_diff": max(chained.max.values()),
        "min_local_layer_code_agreement_pct": min(local.pct().values()),
        "max_local_layer_code_diff": max(local.max.values()),
        "layer_code_agreement_pct": chained.pct(),
        "local_layer_code_agreement_pct": local.pct(),
        "fake_quant_images_per_s": n / fq_time,
        "integer_images_per_s": n / int_time,
    }


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
        ckpt = load_checkpoint(cfg.checkpoint)
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
    for key in ("fake_quant_top1", "integer_top1", "top1_agreement", "equal_logits_pct",
                "min_layer_code_agreement_pct", "min_local_layer_code_agreement_pct"):
        if key in report:
            print(f"{key}: {report[key]:.3f}")
    if cfg.json:
        write_json(report, Path(cfg.json))
    return report
