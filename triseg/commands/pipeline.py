"""Modes of the float -> QAT -> INT8 pipeline: train_float, train_qat, export_int8, eval_int8."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from triseg import artifacts, quant
from triseg.cli import mode
from triseg.commands.common import backend, load_data, prepare, run_dir, write_json
from triseg.models import MODELS, build_model
from triseg.runlog import resolve_device
from triseg.train import TrainConfig, evaluate, fit, predictions, qat_epoch_hook


def _float_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the schedule (default 0.05)")
    p.add_argument("--schedule", default="onecycle", help="onecycle (default) or cosine")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default 5e-4)")
    p.add_argument("--max-train-batches", type=int, default=None, help="cap batches per epoch (smoke runs)")


def _qat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qat-epochs", type=int, default=10, help="QAT fine-tuning epochs (default 10)")
    p.add_argument("--qat-lr", type=float, default=0.001, help="QAT peak learning rate (default 0.001)")
    p.add_argument("--freeze-bn-epoch", type=int, default=None,
                   help="epoch (0-based) from which BN statistics are frozen (default half of --qat-epochs)")
    p.add_argument("--freeze-observer-epoch", type=int, default=None,
                   help="epoch (0-based) from which observers are frozen (default 70%% of --qat-epochs)")
    p.add_argument("--max-train-batches", type=int, default=None, help="cap batches per epoch (smoke runs)")


@mode("models", "list the registered models, their approximated and attention layers")
def list_models(args: argparse.Namespace) -> None:
    for name, cls in MODELS.items():
        print(f"{name}: layers {', '.join(cls.layers())}; attention {', '.join(cls.ATTENTION_LAYERS)}")


@mode("train_float", "train the float model -> {model}_float_unfused.pth", _float_args)
def train_float(args: argparse.Namespace) -> None:
    prepare(args)
    device = resolve_device(args.device)
    data = load_data(args)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, schedule=args.schedule,
                      weight_decay=args.weight_decay, seed=args.seed, max_train_batches=args.max_train_batches)
    torch.manual_seed(args.seed)
    model = build_model(args.model)
    ckpt = Path(args.output_dir) / "checkpoints" / f"{args.model}_float.ckpt"
    hist = fit(model, data, cfg, ckpt, run_dir(args, "float"), resume=args.resume, device=device,
               desc=f"{args.model} float")
    model.cpu()
    test_acc = evaluate(model, data.test)
    path = artifacts.save_stage(model, args.output_dir, args.model, "float", val_acc=hist["val_acc"],
                                test_acc=test_acc, config=vars(cfg))
    print(f"{args.model} float: val {hist['val_acc']:.2f}% test {test_acc:.2f}% -> {path}")


@mode("train_qat", "QAT fine-tuning of the float model -> {model}_qat_preconvert.pth", _qat_args)
def train_qat(args: argparse.Namespace) -> None:
    prepare(args)
    be = backend(args)
    device = resolve_device(args.device)
    float_model = artifacts.load_float(args.output_dir, args.model)
    data = load_data(args)
    model = artifacts.prepare_for_qat(float_model, be)
    cfg = TrainConfig(epochs=args.qat_epochs, lr=args.qat_lr, batch_size=args.batch_size, seed=args.seed,
                      channels_last=False, max_train_batches=args.max_train_batches)
    ckpt = Path(args.output_dir) / "checkpoints" / f"{args.model}_qat.ckpt"
    hook = qat_epoch_hook(args.qat_epochs, args.freeze_bn_epoch, args.freeze_observer_epoch)
    hist = fit(model, data, cfg, ckpt, run_dir(args, "qat"), resume=args.resume, device=device,
               epoch_hook=hook, desc=f"{args.model} qat")
    model.cpu()
    path = artifacts.save_stage(model, args.output_dir, args.model, "qat", backend=be, val_acc=hist["val_acc"],
                                config=vars(cfg))
    print(f"{args.model} QAT ({be}): val {hist['val_acc']:.2f}% -> {path}")


@mode("export_int8", "convert the QAT model to a real INT8 model -> {model}_int8.pth")
def export_int8(args: argparse.Namespace) -> None:
    prepare(args)
    qat_model, be = artifacts.load_qat(args.output_dir, args.model)
    backend(args, be)
    int8 = quant.convert(qat_model, be)
    path = artifacts.save_stage(int8, args.output_dir, args.model, "int8", backend=be)
    print(f"{args.model} INT8 ({be}) -> {path}")


@mode("eval_int8", "test accuracy of the INT8 model and its top-1 agreement with the QAT model")
def eval_int8(args: argparse.Namespace) -> None:
    prepare(args)
    int8, be = artifacts.load_int8(args.output_dir, args.model, args.engine)
    backend(args, be)
    qat_model, _ = artifacts.load_qat(args.output_dir, args.model)
    data = load_data(args)
    test = data.test
    p_int8 = predictions(int8, test, args.batch_size)
    p_qat = predictions(qat_model, test, args.batch_size)
    result = {
        "model": args.model, "backend": be, "images": len(test),
        "acc_int8": 100.0 * p_int8.eq(test.y).float().mean().item(),
        "acc_qat": 100.0 * p_qat.eq(test.y).float().mean().item(),
        "top1_agreement": 100.0 * p_int8.eq(p_qat).float().mean().item(),
    }
    out = write_json(result, Path(args.output_dir) / f"{args.model}_int8_eval.json")
    print(f"{args.model} INT8 ({be}) test {result['acc_int8']:.2f}% | QAT {result['acc_qat']:.2f}% | "
          f"top-1 agreement {result['top1_agreement']:.2f}% on {len(test)} images -> {out}")
