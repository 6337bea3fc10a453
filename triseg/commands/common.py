"""Helpers every mode uses: data loading, backend choice, run folders, JSON output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from triseg import quant
from triseg.artifacts import atomic_write_text
from triseg.data import Cifar10, load_cifar10
from triseg.errors import TrisegError
from triseg.models import model_class
from triseg.runlog import set_threads


def prepare(args: argparse.Namespace) -> None:
    """Validate the common options every mode shares (model, threads)."""
    model_class(args.model)
    set_threads(args.workers)
    if args.batch_size < 1:
        raise TrisegError(f"--batch-size must be at least 1, got {args.batch_size}")


def load_data(args: argparse.Namespace) -> Cifar10:
    """CIFAR-10 splits for the command line's --data-dir / --val-size / --download."""
    if args.val_size is None:
        probe = load_cifar10(args.data_dir, val_size=0, download=args.download)
        val_size = min(5000, len(probe.train) // 10)
    else:
        val_size = args.val_size
    return load_cifar10(args.data_dir, val_size=val_size, download=args.download)


def backend(args: argparse.Namespace, recorded: str | None = None) -> str:
    """The backend: the one a model file records wins; a conflicting --backend is an error."""
    if recorded is not None:
        if args.backend is not None and args.backend != recorded:
            raise TrisegError(f"--backend {args.backend} conflicts with the model file's backend {recorded}")
        return recorded
    chosen = args.backend or "fbgemm"
    quant.check_backend(chosen)
    return chosen


def run_dir(args: argparse.Namespace, kind: str) -> Path:
    """TensorBoard folder ``<output-dir>/runs/<model>__<kind>__<seed>``."""
    return Path(args.output_dir) / "runs" / f"{args.model}__{kind}__{args.seed}"


def write_json(obj: Any, path: str | Path) -> Path:
    """Pretty JSON, written atomically."""
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)
    return Path(path)
