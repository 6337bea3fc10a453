"""The ``lsq-train``, ``lsq-qat`` and ``lsq-infer`` subcommands; each sets ``func(args)``."""

from __future__ import annotations

import argparse

import torch

from triseg.lsq.models import MODELS


def _common(p: argparse.ArgumentParser, log_dir: str) -> None:
    p.add_argument("--model", default="resnet_cifar10", choices=list(MODELS), help="default resnet_cifar10")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagenet"],
                   help="cifar10 (any layout triseg reads) or imagenet (ImageFolder tree with train/ and val/)")
    p.add_argument("--data-dir", default=None,
                   help="dataset location; default $TRISEG_DATA_DIR, else the tiny CIFAR-10 sample shipped with triseg")
    p.add_argument("--val-size", type=int, default=None,
                   help="CIFAR-10 validation images carved from train (default 5000, or 10%% of a smaller train split)")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--eval-limit", type=int, default=None, help="use only the first N val/test images")
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--cuda", type=int, default=-1, help="GPU index, -1 for the CPU (default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--workers", type=int, default=2, help="ImageNet data-loader workers (default 2)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--out-dir", required=True, help="checkpoint.pt and metrics.json go here")
    p.add_argument("--log-dir", default=log_dir, help=f"TensorBoard root (default {log_dir}/)")
    p.add_argument("--resume", action="store_true", help="continue --out-dir/checkpoint.pt")


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def _run_train(args: argparse.Namespace) -> None:
    from triseg.lsq.train import train_float

    _threads(args)
    train_float(args)


def _run_qat(args: argparse.Namespace) -> None:
    from triseg.lsq.quantizer import check_bits
    from triseg.lsq.train import train_qat

    check_bits(args.w_num_bits, "--w-num-bits")
    check_bits(args.a_num_bits, "--a-num-bits")
    check_bits(args.first_last_bits, "--first-last-bits")
    _threads(args)
    train_qat(args)


def _run_infer(args: argparse.Namespace) -> None:
    from triseg.lsq.infer import run_infer

    _threads(args)
    run_infer(args)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lsq-train``, ``lsq-qat`` and ``lsq-infer`` on an argparse subparsers object."""
    p = subparsers.add_parser("lsq-train", help="train a float model for LSQ (resnet18/34, resnet_cifar10, tiny_vgg)",
                              description="Float training with SGD + cosine LR; TensorBoard logs under logs/.")
    _common(p, "logs")
    p.add_argument("--lr", type=float, default=0.1, help="default 0.1")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on the CPU)")
    p.set_defaults(func=_run_train)

    p = subparsers.add_parser("lsq-qat", help="LSQ quantization-aware training from a float checkpoint",
                              description="LSQ QAT (BN folded, learned steps); exports int_model.pt at the end. "
                                          "TensorBoard logs under qat_logs/.")
    _common(p, "qat_logs")
    p.add_argument("--float-checkpoint", default=None, help="checkpoint.pt written by lsq-train")
    p.add_argument("--w-num-bits", type=int, default=4, help="weight bits, 2-8 (default 4)")
    p.add_argument("--a-num-bits", type=int, default=4, help="activation bits, 2-8 (default 4)")
    p.add_argument("--first-last-bits", type=int, default=8,
                   help="bits of the input, first conv weights, classifier weights and classifier input (default 8)")
    p.add_argument("--lr", type=float, default=0.001,
                   help="default 0.001: BN is folded, so the QAT net has no normalisation and diverges at 0.01")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="default 1e-4 (never applied to step sizes)")
    p.set_defaults(func=_run_qat)

    p = subparsers.add_parser("lsq-infer", help="integer-only inference, checked against the fake-quant model",
                              description="Evaluate the integer engine (and, from a QAT checkpoint, the fake-quant "
                                          "model and their agreement).")
    p.add_argument("--checkpoint", default=None, help="QAT checkpoint.pt (exports it, then compares both engines)")
    p.add_argument("--int-model", default=None, help="an exported integer model (int_model.pt)")
    p.add_argument("--export", default=None, help="with --checkpoint: also write the integer model here")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagenet"], help="default cifar10")
    p.add_argument("--data-dir", default=None, help="as for lsq-train")
    p.add_argument("--split", default="test", choices=["val", "test"], help="default test")
    p.add_argument("--val-size", type=int, default=None, help="as for lsq-train")
    p.add_argument("--eval-limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="default 256")
    p.add_argument("--workers", type=int, default=2, help="ImageNet data-loader workers (default 2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--json", default=None, help="write the report here as JSON")
    p.set_defaults(func=_run_infer)
