"""Helpers the modes share: threads, data, backend choice, run folders, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from triseg import quant
from triseg.artifacts import atomic_write_text
from triseg.data import Cifar10, load_cifar10
from triseg.errors import TrisegError
from triseg.jobs import DataOptions, ModelOptions
from triseg.runlog import set_threads


def prepare(cfg: ModelOptions) -> None:
    """Set the CPU threads of a mode."""
    set_threads(cfg.workers)


def load_data(cfg: DataOptions) -> Cifar10:
    """CIFAR-10 splits for the data options."""
    return load_cifar10(cfg.data_dir, val_size=cfg.val_size, download=cfg.download)


def backend(requested: str | None, recorded: str | None = None) -> str:
    """The backend: the one a model file records wins; a conflicting --backend is an error."""
    if recorded is not None:
        if requested is not None and requested != recorded:
            raise TrisegError(f"--backend {requested} conflicts with the model file's backend {recorded}")
        return recorded
    chosen = requested or "fbgemm"
    quant.check_backend(chosen)
    return chosen


def run_dir(cfg: ModelOptions, kind: str, seed: int) -> Path:
    """TensorBoard folder ``<output-dir>/runs/<model>__<kind>__<seed>``."""
    return Path(cfg.output_dir) / "runs" / f"{cfg.model}__{kind}__{seed}"


def write_json(obj: Any, path: str | Path) -> Path:
    """Pretty JSON, written atomically."""
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)
    return Path(path)
